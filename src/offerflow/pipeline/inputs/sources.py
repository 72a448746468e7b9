"""Input sources: one CSV or Parquet file opened as a table of text columns, or a clear error.

The reader gives rows their meaning; this module only gets them out of the file. A file that
cannot be read as a table at all is an :class:`~offerflow.errors.InputError` naming the file
and, where they can be found, the line and the column: absent or unreadable, a directory, empty
(no bytes, or nothing but whitespace), UTF-16, lines ending in a bare CR, not Parquet, a mapped
column missing (with a hint when the header looks delimited by ``;``, a tab or ``|``), a row
with more fields than the header, a quoted field never closed.

The rows come in chunks, in file order, so that the text of the whole file is never in memory
at once: the reader keeps of each row only its parsed values, and the text only of the rows it
rejects. A CSV file is read a few megabytes at a time, cut only where a record ends, and each
piece is parsed by polars behind the file's own header, so that it parses as the whole file
would. A record ends at a newline after an even number of quote characters: a quoted field
holds its quotes doubled, so a newline inside one always follows an odd number.

CSV files are parsed strictly as UTF-8 first; a stray non-UTF-8 byte then costs a second, lossy
read, so that it spoils one value, not the whole file. Only when polars cannot parse a CSV file
is it read once more, with the csv module, to find the line to blame.

Line ends may be LF or CRLF, the two read alike (polars drops the CR before a newline). CR CR LF,
what converting a file that already ends its lines in CRLF to CRLF leaves, reads as CRLF; a file
whose lines end in a bare CR (classic Mac OS) is an InputError. Like polars, a CSV file may start
with a byte-order mark and blank lines before its header.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

import polars as pl

from offerflow.errors import InputError

__all__ = ["Format", "TextChunks", "read_text_columns"]

#: the file formats the reader takes
Format = Literal["csv", "parquet"]
#: reads the file (again) from its start, yielding its rows in chunks, in file order
TextChunks = Callable[[], Iterator[pl.DataFrame]]

_T = TypeVar("_T")
_Encoding = Literal["utf8", "utf8-lossy"]

_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = b" \t\r\n\v\f"
_PROBE_BYTES = 1 << 16
_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}
#: the bytes of a CSV file parsed at a time: large enough for polars to parse a chunk at full
#: speed on every core, small enough that a chunk's text is little beside the reader's result
_CHUNK_BYTES = 4 << 20
_QUOTE = b'"'
_CR_CR_LF = b"\r\r\n"
#: a CR that ends no line: what a file whose lines end in a bare CR has in its first line
_BARE_CR = re.compile(rb"\r[^\r]")


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a CSV file is laid out, as its start shows."""

    #: the line number of the header (after blank lines, if any)
    header_line: int
    #: True when lines end in CR CR LF, read as CR LF
    doubled_cr: bool


def read_text_columns(
    path: Path,
    columns: Mapping[str, str],
    *,
    fmt: Format | None,
    then: Callable[[TextChunks], _T],
    chunk_bytes: int | None = None,
) -> _T:
    """Hand ``then`` the mapped columns of ``path`` as text chunks; return what it returns.

    ``columns`` maps each canonical name to the file's column name. ``then`` gets a function
    that reads the file from its start each time it is called, yielding its rows in file order
    as DataFrames (at least one, maybe empty) with a ``line`` column (Int64: the header's line +
    the record number; in a Parquet file the row number + 2) and one String column per
    canonical name. ``fmt`` defaults to Parquet for a ``.parquet``/``.pq`` suffix and CSV
    otherwise; ``chunk_bytes`` is the size of the pieces a CSV file is parsed in. Raises
    InputError when the file cannot be read as a table, also when that shows only while
    ``then`` reads it.
    """
    fmt = fmt or ("parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv")
    size = chunk_bytes or _CHUNK_BYTES
    try:
        if fmt == "parquet":
            _probe_parquet(path)
            schema = _scan(path, fmt, "utf8").collect_schema()
            _check_schema(path, list(columns.values()), schema, line=None)
            return then(lambda: _parquet_chunks(path, columns))
        layout = _probe_csv(path)
        with path.open("rb") as handle:
            header = _header(_reads(handle, size, layout.doubled_cr))[0]
        schema = _scan(header, fmt, "utf8-lossy").collect_schema()
        _check_schema(path, list(columns.values()), schema, line=layout.header_line)

        def chunks(encoding: _Encoding) -> TextChunks:
            return lambda: _csv_chunks(path, columns, layout, encoding, size)

        try:
            return then(chunks("utf8"))
        except pl.exceptions.ComputeError:
            pass  # most likely a non-UTF-8 byte: the lossy read below tells
        try:
            return then(chunks("utf8-lossy"))
        except pl.exceptions.ComputeError as exc:
            raise _locate_csv_error(path, layout, exc) from exc
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the file as {fmt}: {_first_line(exc)}", path=path) from exc


def _scan(path: Path | bytes, fmt: Format, encoding: _Encoding) -> pl.LazyFrame:
    # glob=False: a file called `data[1].csv` is that file, not a pattern.
    if fmt == "parquet":
        return pl.scan_parquet(path, glob=False)
    return pl.scan_csv(path, infer_schema=False, encoding=encoding, glob=False)


def _text(frame: pl.LazyFrame, columns: Mapping[str, str], first_line: int) -> pl.LazyFrame:
    """The mapped columns as text under their canonical names, after a ``line`` column."""
    return (
        frame.select(pl.col(source).cast(pl.String).alias(name) for name, source in columns.items())
        .with_row_index("line", offset=first_line)
        .with_columns(pl.col("line").cast(pl.Int64))
    )


def _parquet_chunks(path: Path, columns: Mapping[str, str]) -> Iterator[pl.DataFrame]:
    # polars' streaming engine reads a Parquet file a row group at a time. Never an empty
    # iterator: a file without rows yields one empty chunk, which has the schema.
    empty = True
    for chunk in _text(_scan(path, "parquet", "utf8"), columns, 2).collect_batches():
        empty = False
        yield chunk
    if empty:
        yield _text(_scan(path, "parquet", "utf8"), columns, 2).collect()


def _csv_chunks(
    path: Path, columns: Mapping[str, str], layout: _Layout, encoding: _Encoding, size: int
) -> Iterator[pl.DataFrame]:
    # Each piece is parsed on its own: the records before it are only counted, for `line`.
    records = 0
    with path.open("rb") as handle:
        for piece in _csv_pieces(_reads(handle, size, layout.doubled_cr)):
            first_line = layout.header_line + 1 + records
            chunk = _text(_scan(piece, "csv", encoding), columns, first_line)
            frame = chunk.collect()
            records += frame.height
            yield frame


def _reads(handle: BinaryIO, size: int, doubled_cr: bool) -> Callable[[], bytes]:
    """Read the file ``size`` bytes at a time (b"" at its end), CR CR LF as CR LF if asked."""
    if not doubled_cr:
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


def _header(read: Callable[[], bytes]) -> tuple[bytes, bytes]:
    """What precedes the first record (byte-order mark, blank lines, header), and what follows
    of the data read so far. The whole data when the header is all there is, or not even that."""
    data = read()
    while (start := _first_record_end(data, _header_start(data))) < 0:
        more = read()
        if not more:
            return data, b""
        data += more
    return data[:start], data[start:]


def _csv_pieces(read: Callable[[], bytes]) -> Iterator[bytes]:
    """The CSV file as pieces of about the size ``read`` reads, each a CSV text of whole records.

    The first piece is the start of the file; every other one starts with the file's header
    (whatever precedes its first record: byte-order mark, blank lines, header), so that polars
    reads each the way it reads that part of the whole file. At least one piece is yielded.
    """
    header, rest = _header(read)
    data, start, first = header + rest, len(header), True
    while True:
        more = read()
        end = _last_record_end(data, start) if more else len(data)
        if end > start or (first and not more):
            yield data[:end]
            data, first = header + data[end:], False
        if not more:
            return
        data += more  # when no record ended: one longer than a piece is read on to its end


def _header_start(data: bytes) -> int:
    """Where the header starts: after a byte-order mark and blank lines, as polars skips them."""
    start = len(_BOM) if data.startswith(_BOM) else 0
    while data.startswith((b"\n", b"\r\n"), start):
        start += 1 if data.startswith(b"\n", start) else 2
    return start


def _first_record_end(data: bytes, start: int) -> int:
    """The end (past its newline) of the record that starts at ``start``, or -1 if not in data."""
    end = data.find(b"\n", start)
    quotes = data.count(_QUOTE, start, end) if end >= 0 else 0
    while end >= 0 and quotes % 2:
        following = data.find(b"\n", end + 1)
        if following >= 0:
            quotes += data.count(_QUOTE, end, following)
        end = following
    return end + 1 if end >= 0 else -1


def _last_record_end(data: bytes, start: int) -> int:
    """The end (past its newline) of the last whole record after ``start``, or -1 if none.

    ``start`` must be where a record starts; each step back counts only the quotes it passes.
    """
    end = data.rfind(b"\n", start)
    quotes = data.count(_QUOTE, start, end) if end >= 0 else 0
    while end >= 0 and quotes % 2:
        previous = data.rfind(b"\n", start, end)
        if previous >= 0:
            quotes -= data.count(_QUOTE, previous, end)
        end = previous
    return end + 1 if end >= 0 else -1


def _probe_parquet(path: Path) -> None:
    """Check that ``path`` is a non-empty Parquet file."""
    if path.is_dir():
        raise InputError("this is a directory, not a file", path=path)
    with path.open("rb") as handle:
        head = handle.read(len(_PARQUET_MAGIC))
    if not head:
        raise InputError("empty file", path=path)
    if not head.startswith(_PARQUET_MAGIC):
        raise InputError("not a Parquet file (it does not start with PAR1)", path=path)


def _probe_csv(path: Path) -> _Layout:
    """Check that ``path`` is a non-empty UTF-8 text file with lines; return its layout."""
    if path.is_dir():
        raise InputError("this is a directory, not a file", path=path)
    with path.open("rb") as handle:
        head = handle.read(_PROBE_BYTES)
        if head.startswith(_UTF16_BOMS):
            raise InputError("the file is UTF-16 text, not UTF-8: save it as UTF-8", path=path)
        chunk = head.removeprefix(_BOM)
        while chunk and not chunk.strip(_WHITESPACE):
            chunk = handle.read(_PROBE_BYTES)
        if not chunk:
            raise InputError("empty file: no header, no rows", path=path)
    text = head.removeprefix(_BOM)
    first = text[: text.find(b"\n")] if b"\n" in text else text
    if _BARE_CR.search(first):
        message = "lines end in a bare CR (classic Mac OS): save the file with LF or CRLF"
        raise InputError(message, path=path, line=1)
    doubled_cr = first.endswith(b"\r\r")
    if doubled_cr:
        head = head.replace(_CR_CR_LF, b"\r\n")
    # polars skips blank lines before the header; line numbers count them.
    return _Layout(1 + head[: _header_start(head)].count(b"\n"), doubled_cr)


def _check_schema(
    path: Path, wanted: Sequence[str], schema: pl.Schema, *, line: int | None
) -> None:
    """Raise InputError when a mapped column is missing or cannot be read as text."""
    names = schema.names()
    missing = [column for column in wanted if column not in names]
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
        count, delimiter = max((names[0].count(d), d) for d in _DELIMITERS)
        if count:
            said = _DELIMITERS[delimiter]
            message += f" (one column containing {said}: is the file delimited by {said}?)"
    only = missing[0] if len(missing) == 1 else None
    raise InputError(message, path=path, line=line, column=only)


def _locate_csv_error(path: Path, layout: _Layout, exc: pl.exceptions.PolarsError) -> InputError:
    """The error polars met, located by reading the file with the csv module."""
    header_line = layout.header_line
    width: int | None = None
    records = 0
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            for row in reader:
                if width is None:
                    if row:  # blank lines before the header, as polars skips them
                        width = len(row)
                    continue
                records += 1
                if len(row) > width:
                    message = f"this row has {len(row)} fields, the header {width}"
                    return InputError(message, path=path, line=header_line + records)
        except csv.Error as error:
            line = header_line if width is None else header_line + records + 1
            return InputError(_csv_message(error), path=path, line=line)
    return InputError(f"cannot read the file as csv: {_first_line(exc)}", path=path)


def _csv_message(error: csv.Error) -> str:
    text = str(error)
    if text == "unexpected end of data":
        return "a quoted field of this row is never closed"
    if text.startswith("field larger than field limit"):
        return f"a field of this row is too long ({text}): is a closing quote missing?"
    return f"malformed CSV: {text}"


def _first_line(exc: Exception) -> str:
    """The first line of a polars error: the rest is advice for polars users, not ours."""
    return str(exc).strip().partition("\n")[0]
