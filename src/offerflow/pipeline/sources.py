"""Input sources: one CSV or Parquet file opened as a table of text columns, or a clear error.

The reader gives rows their meaning; this module only gets them out of the file. A file that
cannot be read as a table at all is an :class:`~offerflow.errors.InputError` naming the file
and, where they can be found, the line and the column: absent or unreadable, a directory, empty
(no bytes, or nothing but whitespace), UTF-16, not Parquet, a mapped column missing (with a hint
when the header looks delimited by ``;``, a tab or ``|``), a row with more fields than the
header, a quoted field never closed.

CSV files are scanned with polars, strictly as UTF-8 first; a stray non-UTF-8 byte then costs a
second, lossy scan, so that it spoils one value, not the whole file. Only when polars cannot
parse a CSV file is it read once more, with the csv module, to find the line to blame.

Like polars, a CSV file may start with a byte-order mark and blank lines before its header.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from offerflow.errors import InputError

__all__ = ["Format", "read_text_columns"]

#: the file formats the reader takes
Format = Literal["csv", "parquet"]

_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = b" \t\r\n\v\f"
_CHUNK = 1 << 16
_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}


def read_text_columns(
    path: Path,
    columns: Mapping[str, str],
    *,
    fmt: Format | None,
    then: Callable[[pl.LazyFrame], pl.LazyFrame],
) -> pl.DataFrame:
    """The mapped columns of ``path`` as text under their canonical names, then ``then``.

    ``columns`` maps each canonical name to the file's column name. The scanned frame has a
    ``line`` column (Int64: the header's line + the record number; in a Parquet file the row
    number + 2) and one String column per canonical name; ``then`` builds the query on it and
    the result is collected once. ``fmt`` defaults to Parquet for a ``.parquet``/``.pq`` suffix
    and CSV otherwise. Raises InputError when the file cannot be read as a table.
    """
    fmt = fmt or ("parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv")
    try:
        header_line = _probe(path, fmt)
        schema = _scan(path, fmt, "utf8-lossy").collect_schema()
        _check_schema(
            path, list(columns.values()), schema, line=header_line if fmt == "csv" else None
        )

        def query(encoding: Literal["utf8", "utf8-lossy"]) -> pl.LazyFrame:
            text = (
                _scan(path, fmt, encoding)
                .select(
                    pl.col(source).cast(pl.String).alias(name) for name, source in columns.items()
                )
                .with_row_index("line", offset=header_line + 1)
                .with_columns(pl.col("line").cast(pl.Int64))
            )
            return then(text)

        if fmt == "parquet":
            return query("utf8").collect()
        try:
            return query("utf8").collect()
        except pl.exceptions.ComputeError:
            pass  # most likely a non-UTF-8 byte: the lossy scan below tells
        try:
            return query("utf8-lossy").collect()
        except pl.exceptions.ComputeError as exc:
            raise _locate_csv_error(path, header_line, exc) from exc
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the file as {fmt}: {_first_line(exc)}", path=path) from exc


def _scan(path: Path, fmt: Format, encoding: Literal["utf8", "utf8-lossy"]) -> pl.LazyFrame:
    # glob=False: a file called `data[1].csv` is that file, not a pattern.
    if fmt == "parquet":
        return pl.scan_parquet(path, glob=False)
    return pl.scan_csv(path, infer_schema=False, encoding=encoding, glob=False)


def _probe(path: Path, fmt: Format) -> int:
    """Check that ``path`` is a non-empty file of its format; return its header's line number."""
    if path.is_dir():
        raise InputError("this is a directory, not a file", path=path)
    with path.open("rb") as handle:
        head = handle.read(_CHUNK)
        if fmt == "parquet":
            if not head:
                raise InputError("empty file", path=path)
            if not head.startswith(_PARQUET_MAGIC):
                raise InputError("not a Parquet file (it does not start with PAR1)", path=path)
            return 1
        if head.startswith(_UTF16_BOMS):
            raise InputError("the file is UTF-16 text, not UTF-8: save it as UTF-8", path=path)
        chunk = head.removeprefix(_BOM)
        while chunk and not chunk.strip(_WHITESPACE):
            chunk = handle.read(_CHUNK)
        if not chunk:
            raise InputError("empty file: no header, no rows", path=path)
    # polars skips blank lines before the header; line numbers count them.
    body = head.removeprefix(_BOM)
    line = 1
    while body.startswith((b"\n", b"\r\n")):
        body = body[1 if body.startswith(b"\n") else 2 :]
        line += 1
    return line


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


def _locate_csv_error(path: Path, header_line: int, exc: pl.exceptions.PolarsError) -> InputError:
    """The error polars met, located by reading the file with the csv module."""
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
