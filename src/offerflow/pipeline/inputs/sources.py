"""Input sources: one CSV or Parquet file opened as a table of text columns, or a clear error.

The reader gives rows their meaning; this module only gets them out of the file. A file that
cannot be read as a table at all is an :class:`~offerflow.errors.InputError` naming the file
and, where they can be found, the line and the column: absent or unreadable, a directory, empty
(no bytes, or nothing but whitespace), UTF-16 read as UTF-8, text that is not in the encoding
given, not Parquet, a mapped
column missing (with a hint when the header looks delimited by ``;``, a tab or ``|``), a row
with more fields than the header, a quoted field never closed.

A record that breaks CSV's quoting rules is no reason to give up the file: a quote inside an
unquoted field (``B5"x``) or text after a closing quote (``"B"x``). Its row comes with the
problem :data:`MALFORMED`, line numbers stay right, and its values are those a lenient reader
(Python's csv module, a spreadsheet) sees, for the rejects.

The rows come in chunks, in file order, so that the text of the whole file is never in memory
at once: the reader keeps of each row only its parsed values, and the text only of the rows it
rejects. A CSV file is read a few megabytes at a time, cut only where a record ends, and each
piece is parsed by polars behind the file's own header, so that it parses as the whole file
would. Where a record ends is decided by :mod:`~offerflow.pipeline.inputs.records`, which also
stands a placeholder in for a malformed record.

A CSV file is written as ``input.csv`` says: its delimiter and quote character, and its
encoding, UTF-8 unless given; a file in another encoding is decoded as it is read, and what
follows sees UTF-8. A CSV file compressed with gzip, bzip2 or xz, or alone in a zip archive, is
decompressed as it is read (:mod:`~offerflow.pipeline.inputs.decoding`): its first bytes say
so, not its name; one that is corrupt or cut short is an InputError, and so is a compressed
Parquet file. A piece is parsed
as UTF-8. Bytes that are not UTF-8 (not text in the file's encoding) spoil their values only:
a piece holding some is decoded again with a marker in place of each such byte, and a row whose
mapped column holds one comes with the problem ``bad_encoding:<name>`` (its first such column,
in the order of ``columns``), the bytes shown as U+FFFD. A U+FFFD the file itself holds, as
UTF-8, is text.

Line ends may be LF or CRLF, the two read alike (polars drops the CR before a newline). CR CR LF,
what converting a file that already ends its lines in CRLF to CRLF leaves, reads as CRLF, and in
a file whose lines end in a bare CR (classic Mac OS; its header line shows it) every CR reads as
LF. Like polars, a CSV file may start
with a byte-order mark and blank lines before its header.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import polars as pl

from offerflow.config import CsvFormat
from offerflow.errors import InputError
from offerflow.pipeline.inputs.decoding import COMPRESSION_ERRORS, UTF8, Utf8Stream, compression
from offerflow.pipeline.inputs.records import (
    Grammar,
    Piece,
    csv_pieces,
    lenient_fields,
    record_end,
    unused_marker,
)

__all__ = ["BAD_ENCODING", "MALFORMED", "Format", "TextChunks", "read_text_columns"]

#: the file formats the reader takes
Format = Literal["csv", "parquet"]
#: reads the file (again) from its start, yielding its rows in chunks, in file order
TextChunks = Callable[[], Iterator[pl.DataFrame]]
#: the problem of a row whose record breaks CSV's quoting rules
MALFORMED = "malformed_row"
#: the problem of a row whose mapped column holds bytes that are not UTF-8, before its name
BAD_ENCODING = "bad_encoding:"

_T = TypeVar("_T")
_Encoding = Literal["utf8", "utf8-lossy"]

_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = b" \t\r\n\v\f"
_PROBE_BYTES = 1 << 16
_DELIMITERS = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}
#: the bytes of a CSV file parsed at a time: large enough for polars to parse a chunk at full
#: speed on every core, small enough that a chunk's text is little beside the reader's result
_CHUNK_BYTES = 4 << 20
_CR_CR_LF = b"\r\r\n"
#: a CR that ends no line: what a file whose lines end in a bare CR has in its first line
_BARE_CR = re.compile(rb"\r[^\r]")
#: what the ``surrogateescape`` error handler decodes a byte that is not UTF-8 to
_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a CSV file is laid out, as its start shows."""

    #: the line number of the header (after blank lines, if any)
    header_line: int
    #: True when lines end in CR CR LF, read as CR LF
    doubled_cr: bool
    #: the header's column names
    names: tuple[str, ...] = ()
    #: True when lines end in a bare CR (classic Mac OS), read as LF
    bare_cr: bool = False


def read_text_columns(
    path: Path,
    columns: Mapping[str, str],
    *,
    fmt: Format | None,
    then: Callable[[TextChunks], _T],
    chunk_bytes: int | None = None,
    rows: int | None = None,
    csv: CsvFormat | None = None,
) -> _T:
    """Hand ``then`` the mapped columns of ``path`` as text chunks; return what it returns.

    ``columns`` maps each canonical name to the file's column name. ``then`` gets a function
    that reads the file from its start each time it is called, yielding its rows in file order
    as DataFrames (at least one, maybe empty) with a ``line`` column (Int64: the header's line +
    the record number; in a Parquet file the row number + 2), one String column per canonical
    name, and a ``problem`` column (String): :data:`MALFORMED` for a record that breaks CSV's
    quoting rules, :data:`BAD_ENCODING` + the canonical name for a mapped column holding bytes
    that are not UTF-8, else null. ``fmt`` defaults to Parquet for a ``.parquet``/``.pq`` suffix and
    CSV otherwise; ``chunk_bytes`` is the size of the pieces a CSV file is parsed in; ``rows``
    reads only the file's first rows, as a sample; ``csv`` says how a CSV file is written
    (delimiter, quote, encoding; RFC 4180 in UTF-8 without). Raises
    InputError when the file cannot be read as a table, also when that shows only while
    ``then`` reads it.
    """
    fmt = fmt or ("parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv")
    size = chunk_bytes or _CHUNK_BYTES
    csv = csv or CsvFormat()
    try:
        if fmt == "parquet":
            _probe_parquet(path)
            schema = pl.scan_parquet(path, glob=False).collect_schema()
            _check_schema(path, list(columns.values()), schema, line=None, csv=csv)
            return then(lambda: _parquet_chunks(path, columns, rows))
        grammar = Grammar.of(csv.delimiter, csv.quote)
        layout = _probe_csv(path, csv.encoding)
        with Utf8Stream(path, csv.encoding) as handle:
            header = _header(_reads(handle, size, layout), grammar)[0]
        schema = _scan_csv(header, csv, "utf8-lossy").collect_schema()
        _check_schema(path, list(columns.values()), schema, line=layout.header_line, csv=csv)
        layout = dataclasses.replace(layout, names=tuple(schema.names()))
        return then(lambda: _csv_chunks(path, columns, layout, size, rows, csv))
    except COMPRESSION_ERRORS as exc:  # a compressed file, corrupt or cut short
        raise InputError(f"cannot decompress the file: {exc}", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    except UnicodeDecodeError as exc:  # bytes that no escape can carry, e.g. half a UTF-16 unit
        message = f"the file is not {csv.encoding} text: {exc.reason} at byte {exc.start}"
        raise InputError(message + ": is input.csv.encoding right?", path=path) from exc
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the file as {fmt}: {_first_line(exc)}", path=path) from exc


def _scan_csv(text: bytes, csv: CsvFormat, encoding: _Encoding) -> pl.LazyFrame:
    """CSV text (UTF-8, whatever the file's encoding) as a frame of text columns."""
    return pl.scan_csv(
        text,
        infer_schema=False,
        encoding=encoding,
        separator=csv.delimiter,
        quote_char=csv.quote,
    )


def _text(frame: pl.LazyFrame, columns: Mapping[str, str], first_line: int) -> pl.LazyFrame:
    """The mapped columns as text under their canonical names, after a ``line`` column."""
    return (
        frame.select(pl.col(source).cast(pl.String).alias(name) for name, source in columns.items())
        .with_row_index("line", offset=first_line)
        .with_columns(pl.col("line").cast(pl.Int64), pl.lit(None, pl.String).alias("problem"))
    )


def _parquet_chunks(
    path: Path, columns: Mapping[str, str], rows: int | None
) -> Iterator[pl.DataFrame]:
    # polars' streaming engine reads a Parquet file a row group at a time. Never an empty
    # iterator: a file without rows yields one empty chunk, which has the schema.
    frame = _text(pl.scan_parquet(path, glob=False), columns, 2)
    if rows is not None:
        frame = frame.head(rows)
    empty = True
    for chunk in frame.collect_batches():
        empty = False
        yield chunk
    if empty:
        yield frame.collect()


def _csv_chunks(
    path: Path,
    columns: Mapping[str, str],
    layout: _Layout,
    size: int,
    rows: int | None,
    csv: CsvFormat,
) -> Iterator[pl.DataFrame]:
    # Each piece is parsed on its own: the records before it are only counted, for `line`.
    records = 0
    grammar = Grammar.of(csv.delimiter, csv.quote)
    with Utf8Stream(path, csv.encoding) as handle:
        read = _reads(handle, size, layout)
        header, data = _header(read, grammar)
        # its names were read lossily when the mapping was checked, so they are read here too
        header = header.decode("utf-8", "replace").encode()
        for piece in csv_pieces(read, data, len(layout.names), grammar):
            first_line = layout.header_line + 1 + records
            try:
                chunk = _parse(header + piece.body, columns, first_line, csv)
            except pl.exceptions.ComputeError as exc:
                width = len(layout.names)
                raise _locate(piece.body, path, first_line, width, grammar, exc) from exc
            chunk = _with_malformed(chunk, piece, columns, layout.names, grammar)
            records += chunk.height
            if rows is not None and records >= rows:
                yield chunk.head(chunk.height - (records - rows))
                return
            if piece.unclosed:
                line = layout.header_line + 1 + records
                raise InputError("a quoted field of this row is never closed", path=path, line=line)
            yield chunk


def _parse(
    text: bytes, columns: Mapping[str, str], first_line: int, csv: CsvFormat
) -> pl.DataFrame:
    """The rows of a CSV text, each with a ``problem`` where a mapped value is not UTF-8."""
    try:
        return _text(_scan_csv(text, csv, "utf8"), columns, first_line).collect()
    except pl.exceptions.ComputeError:
        try:
            text.decode()
        except UnicodeDecodeError:
            pass
        else:
            raise  # not a matter of encoding
    decoded = text.decode("utf-8", "surrogateescape")
    marker = unused_marker(decoded)
    marked = _ESCAPED.sub(marker, decoded).encode()
    frame = _text(_scan_csv(marked, csv, "utf8"), columns, first_line)
    spoilt = {name: pl.col(name).str.contains(marker, literal=True) for name in columns}
    return frame.with_columns(
        *(pl.col(name).str.replace_all(marker, "\ufffd", literal=True) for name in columns),
        pl.coalesce(
            pl.when(spoilt[name]).then(pl.lit(BAD_ENCODING + name)) for name in columns
        ).alias("problem"),
    ).collect()


def _reads(handle: Utf8Stream, size: int, layout: _Layout) -> Callable[[], bytes]:
    """Read the file ``size`` bytes at a time (b"" at its end), its line ends as LF or CR LF."""
    if layout.bare_cr:
        return lambda: handle.read(size).replace(b"\r", b"\n")
    if not layout.doubled_cr:
        return lambda: handle.read(size)
    carry = b""

    def read() -> bytes:
        nonlocal carry
        while True:
            more = handle.read(size)
            data, carry = carry + more, b""
            if more:
                # trailing CRs may start a CR CR LF that the next read completes
                kept = len(data.rstrip(b"\r"))
                data, carry = data[:kept], data[kept:]
                if not data:
                    continue
            return data.replace(_CR_CR_LF, b"\r\n")

    return read


def _header(read: Callable[[], bytes], grammar: Grammar) -> tuple[bytes, bytes]:
    """What precedes the first record (byte-order mark, blank lines, header), and what follows
    of the data read so far. The whole data when the header is all there is, or not even that."""
    data = read()
    while (start := record_end(data, _header_start(data), grammar)) < 0:
        more = read()
        if not more:
            return data, b""
        data += more
    return data[:start], data[start:]


def _with_malformed(
    frame: pl.DataFrame,
    piece: Piece,
    columns: Mapping[str, str],
    names: Sequence[str],
    grammar: Grammar,
) -> pl.DataFrame:
    """The chunk with each placeholder's row marked MALFORMED and given the record's values."""
    if not piece.malformed:
        return frame
    first = next(iter(columns))
    rows = frame.get_column(first).eq(piece.marker).arg_true()
    values = [lenient_fields(record, grammar) for record in piece.malformed]
    updates = [pl.Series("problem", [MALFORMED] * len(values), pl.String)]
    for name, source in columns.items():
        at = names.index(source)
        column = [fields[at] or None if at < len(fields) else None for fields in values]
        updates.append(pl.Series(name, column, pl.String))
    return frame.with_columns(
        frame.get_column(update.name).scatter(rows, update) for update in updates
    )


def _probe_parquet(path: Path) -> None:
    """Check that ``path`` is a non-empty Parquet file."""
    if path.is_dir():
        raise InputError("this is a directory, not a file", path=path)
    with path.open("rb") as handle:
        head = handle.read(len(_PARQUET_MAGIC))
    if not head:
        raise InputError("empty file", path=path)
    if not head.startswith(_PARQUET_MAGIC):
        kind = compression(path)
        inside = "" if kind is None else f": it is {kind}-compressed; decompress it first"
        raise InputError(f"not a Parquet file (it does not start with PAR1){inside}", path=path)


def _probe_csv(path: Path, encoding: str) -> _Layout:
    """Check that ``path`` is a non-empty text file with lines; return its layout."""
    if path.is_dir():
        raise InputError("this is a directory, not a file", path=path)
    with Utf8Stream(path, encoding) as handle:
        head = handle.read(_PROBE_BYTES)
        if encoding in UTF8 and head.startswith(_UTF16_BOMS):
            message = "the file is UTF-16 text, not UTF-8: set input.csv.encoding to utf-16"
            raise InputError(message, path=path)
        chunk = head.removeprefix(_BOM)
        while chunk and not chunk.strip(_WHITESPACE):
            chunk = handle.read(_PROBE_BYTES)
        if not chunk:
            raise InputError("empty file: no header, no rows", path=path)
    text = head.removeprefix(_BOM)
    first = text[: text.find(b"\n")] if b"\n" in text else text
    bare_cr = _BARE_CR.search(first) is not None
    doubled_cr = not bare_cr and first.endswith(b"\r\r")
    if bare_cr:
        head = head.replace(b"\r", b"\n")
    elif doubled_cr:
        head = head.replace(_CR_CR_LF, b"\r\n")
    # polars skips blank lines before the header; line numbers count them.
    return _Layout(1 + head[: _header_start(head)].count(b"\n"), doubled_cr, bare_cr=bare_cr)


def _header_start(data: bytes) -> int:
    """Where the header starts: after a byte-order mark and blank lines, as polars skips them."""
    start = len(_BOM) if data.startswith(_BOM) else 0
    while data.startswith((b"\n", b"\r\n"), start):
        start += 1 if data.startswith(b"\n", start) else 2
    return start


def _check_schema(
    path: Path, wanted: Sequence[str], schema: pl.Schema, *, line: int | None, csv: CsvFormat
) -> None:
    """Raise InputError when a mapped column is missing or cannot be read as text."""
    names = schema.names()
    missing = [column for column in wanted if column not in names]
    twice = [column for column in wanted if f"{column}_duplicated_0" in names]  # polars' names
    if twice:
        message = f"the header names {twice[0]!r} more than once: which column is it? rename one"
        raise InputError(message, path=path, line=line, column=twice[0])
    if not missing:
        for column in wanted:
            if schema[column].is_nested():
                message = f"the column holds {schema[column]}, not text or numbers"
                raise InputError(message, path=path, column=column)
        return
    has = "the header has" if line is not None else "the file has the columns"
    message = f"missing column(s) {', '.join(map(repr, missing))}; {has} {names}"
    folded = {name.strip().casefold(): name for name in names}
    near = [f"{folded[m.casefold()]!r} for {m!r}" for m in missing if m.casefold() in folded]
    if near:
        message += f" (spelled differently? {', '.join(near)})"
    elif len(names) == 1:
        others = [d for d in _DELIMITERS if d != csv.delimiter]
        count, delimiter = max((names[0].count(d), d) for d in others)
        if count:
            said = _DELIMITERS[delimiter]
            message += (
                f" (one column containing {said}: is the file delimited by {said}? "
                "see input.csv.delimiter)"
            )
    only = missing[0] if len(missing) == 1 else None
    raise InputError(message, path=path, line=line, column=only)


def _locate(
    body: bytes,
    path: Path,
    first_line: int,
    width: int,
    grammar: Grammar,
    exc: pl.exceptions.PolarsError,
) -> InputError:
    """The error polars met in a piece of whole records starting at ``first_line``, located."""
    text = body if body.endswith(b"\n") else body + b"\n"
    start, line = 0, first_line
    while (record := grammar.lenient_record.match(text, start)) is not None and start < len(text):
        fields = len(lenient_fields(record.group(), grammar))
        if fields > width:
            return InputError(
                f"this row has {fields} fields, the header {width}", path=path, line=line
            )
        start, line = record.end(), line + 1
    return InputError(f"cannot read the file as csv: {_first_line(exc)}", path=path)


def _first_line(exc: Exception) -> str:
    """The first line of a polars error: the rest is advice for polars users, not ours."""
    return str(exc).strip().partition("\n")[0]
