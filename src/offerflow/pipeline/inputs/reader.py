"""The transaction reader: one input file in, the canonical transaction table and its rejects out.

Every column is read as text (:mod:`offerflow.pipeline.inputs.sources` gets it out of the file, or
raises InputError), then parsed with vectorised polars expressions
(:mod:`~offerflow.pipeline.inputs.parsing`), so that a row that cannot be used keeps its raw
values for ``rejects.csv``. Each input row ends up in exactly one of the two tables (the row
ledger)::

    rows_in == rows_used + rows_rejected

A row is checked in the order of :data:`~offerflow.pipeline.inputs.parsing.REASONS` and rejected
with the first reason that applies. The last check, the reader's own, is ``duplicate_row``: a row
whose raw values in the five mapped columns (other columns are not compared) are exactly those of
an earlier row, of its own file or of an earlier file of a glob. Identical raw values get the
same verdict from the other checks, so a duplicate of a usable row is rejected as
``duplicate_row`` (the first occurrence is used), and a duplicate of a rejected row is rejected
for the same reason as that row. (The values of a ``malformed_row`` and those holding bytes that
are not UTF-8 are a reading of the file, not its text: the row whose text they resemble is no
copy of theirs.)

A file is read in chunks (:mod:`~offerflow.pipeline.inputs.sources`), and of each row only what
the result needs is kept: the parsed values of a usable row, the raw text of a rejected one. So
duplicates are found after the last chunk of the last file, and among usable rows only (a
duplicate of a rejected row has its reason already): on a 64-bit hash of each row's raw values,
after which the rows whose hash repeats are read again from their files and their raw text
compared, so that a hash collision can cost time, never a row.

``line`` numbers rows the way a person counts lines in the file: the header is line 1 (or later,
after blank lines before it) and the first data row the next. In a CSV file it is the *record*
number + the header's line, which is the physical line number unless a quoted field spans
several lines; in a Parquet file it is the row number + 2.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import polars as pl

from offerflow.config import DEFAULT_COLUMNS as _DEFAULT_COLUMNS
from offerflow.config import CsvFormat
from offerflow.errors import InputError
from offerflow.pipeline.inputs.parsing import CANONICAL, REASONS, row_parser
from offerflow.pipeline.inputs.sources import (
    BAD_ENCODING,
    MALFORMED,
    Format,
    TextChunks,
    read_text_columns,
)
from offerflow.pipeline.inputs.timestamps import parse_as_of

__all__ = [
    "DEFAULT_COLUMNS",
    "FileSource",
    "ReadResult",
    "TextSource",
    "parse_as_of",
    "read_inputs",
    "read_sources",
    "read_transactions",
    "source_columns",
]

#: the default partner's column names, by canonical name
DEFAULT_COLUMNS: Mapping[str, str] = MappingProxyType(_DEFAULT_COLUMNS)

_T = TypeVar("_T")


@dataclass(slots=True)
class ReadResult:
    """What one input file holds: its usable transactions, its rejects and its members."""

    #: usable rows: line, member_id, ts (UTC), type (buy/gift/redeem), points, revenue
    transactions: pl.DataFrame
    #: rejected rows: line, the raw value of each mapped source column (null when empty), reason
    rejects: pl.DataFrame
    #: every distinct non-empty member id of the input, rejected rows included, sorted
    members: pl.Series
    #: data rows in the file
    rows_in: int
    #: usable rows (``transactions.height`` until the transactions are taken)
    rows_used: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.rows_used < 0:
            self.rows_used = self.transactions.height

    def take_transactions(self) -> pl.DataFrame:
        """Hand the transactions over and keep none here: the largest table of a run is then
        freed as soon as its taker is done with it. The counts stay."""
        transactions, self.transactions = self.transactions, self.transactions.clear()
        return transactions

    @property
    def rows_rejected(self) -> int:
        """The number of rejected rows."""
        return self.rejects.height

    @property
    def rejects_by_reason(self) -> dict[str, int]:
        """The number of rejected rows per reason code, sorted by reason."""
        counts = self.rejects["reason"].value_counts()
        return dict(sorted(zip(counts["reason"], counts["count"], strict=True)))


def read_inputs(pattern: Path, **options: Any) -> ReadResult:
    """Read a file, or every file a glob pattern matches (in name order), as one input.

    ``options`` are those of :func:`read_transactions`. With several files, ``rejects`` gains a
    ``file`` column (its ``line`` counts within that file), transactions are ordered file after
    file (equal timestamps keep that order), and a row that repeats one of an earlier file is a
    duplicate as one that repeats an earlier row of its own file is.
    """
    if not glob.has_magic(str(pattern)):
        return read_transactions(pattern, **options)
    paths = sorted(Path(p) for p in glob.glob(str(pattern)))
    if not paths:
        raise InputError("no file matches this pattern", path=pattern)
    return _read_files(paths, several=True, **options)


def read_transactions(
    path: Path,
    *,
    as_of: datetime,
    columns: Mapping[str, str] = DEFAULT_COLUMNS,
    fmt: Format | None = None,
    type_aliases: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    csv: CsvFormat | None = None,
    rows: int | None = None,
) -> ReadResult:
    """Read a CSV or Parquet file of transactions into usable rows and rejects.

    ``columns`` maps each canonical name to the file's column name, ``type_aliases`` maps a
    partner's spelling of a type (case-insensitive) to a canonical type, and rows after
    ``as_of`` (a naive datetime is taken as UTC) are rejected as ``future_timestamp``.
    ``fmt`` defaults to Parquet for a ``.parquet``/``.pq`` suffix and CSV otherwise.
    ``timestamp_format`` (a strftime pattern) replaces the ISO 8601 forms for a partner that
    writes timestamps otherwise; a timestamp without an offset is a time of ``timezone`` (an
    IANA name, converted to UTC), or UTC when None.
    ``csv`` says how a CSV file is written (delimiter, quote, decimal mark, thousands,
    encoding; RFC 4180 in UTF-8 without). ``rows`` reads only the first rows of the file, as a
    sample.

    Raises InputError, naming the file and where known the line and the column, when the file
    cannot be read as a table: absent, unreadable, empty, not of its format, a mapped column
    missing, or a CSV row with more fields than the header.
    """
    return _read_files(
        [Path(path)],
        several=False,
        as_of=as_of,
        columns=columns,
        fmt=fmt,
        type_aliases=type_aliases,
        timestamp_format=timestamp_format,
        timezone=timezone,
        csv=csv,
        rows=rows,
    )


class TextSource(Protocol):
    """Where one file's rows come from as text: the file itself, or its rows kept elsewhere
    (e.g. the rows of one partition of its members)."""

    #: the file, as rejects name it
    @property
    def name(self) -> str: ...

    def read(self, then: Callable[[TextChunks], _T]) -> _T:
        """Call ``then`` with the file's rows as text chunks (lines as in the file, in order)."""
        ...


@dataclass(frozen=True, slots=True)
class FileSource:
    """A CSV or Parquet file read from its start (``rows``: only its first rows)."""

    path: Path
    columns: Mapping[str, str]
    fmt: Format | None = None
    rows: int | None = None
    csv: CsvFormat | None = None

    @property
    def name(self) -> str:
        """The file's path."""
        return str(self.path)

    def read(self, then: Callable[[TextChunks], _T]) -> _T:
        """Call ``then`` with the file's rows as text chunks."""
        return read_text_columns(
            self.path, self.columns, fmt=self.fmt, then=then, rows=self.rows, csv=self.csv
        )


@dataclass(frozen=True, slots=True)
class _FileRows:
    """One file's rows after the first pass: duplicates not yet found."""

    source: TextSource
    #: usable rows: line, the parsed values, ``_hash`` of the raw values
    usable: pl.DataFrame
    #: rejected rows: line, the raw values, ``_reason`` (an index into REASONS)
    rejected: pl.DataFrame
    rows: int
    #: one more than the largest line number of its rows: where the next file's lines may start
    span: int


def _read_files(
    paths: Sequence[Path],
    *,
    several: bool,
    as_of: datetime,
    columns: Mapping[str, str] = DEFAULT_COLUMNS,
    fmt: Format | None = None,
    type_aliases: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    csv: CsvFormat | None = None,
    rows: int | None = None,
) -> ReadResult:
    """Read files in turn as one input."""
    source = source_columns(columns)
    sources = [FileSource(path, source, fmt, rows, csv) for path in paths]
    return read_sources(
        sources,
        several=several,
        as_of=as_of,
        columns=columns,
        type_aliases=type_aliases,
        timestamp_format=timestamp_format,
        timezone=timezone,
        csv=csv,
    )


def read_sources(
    sources: Sequence[TextSource],
    *,
    several: bool,
    as_of: datetime,
    columns: Mapping[str, str] = DEFAULT_COLUMNS,
    type_aliases: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    csv: CsvFormat | None = None,
) -> ReadResult:
    """Read files' rows in turn as one input: each file's rows, then the duplicates among them
    all. ``several``: the rejects name the file of each row (a ``file`` column)."""
    source = source_columns(columns)
    parse = row_parser(
        as_of=as_of,
        type_aliases=type_aliases,
        timestamp_format=timestamp_format,
        timezone=timezone,
        csv=csv,
    )
    files = [text.read(partial(_first_pass, text, parse=parse)) for text in sources]
    # Lines of later files are shifted past those of earlier ones: one order across the files.
    offsets = list(accumulate((f.span for f in files[:-1]), initial=0))
    # No rechunk: it would copy the largest table of the read, for nothing.
    usable = pl.concat(
        [f.usable.with_columns(pl.col("line") + at) for f, at in zip(files, offsets, strict=True)],
        rechunk=False,
    )
    duplicates = _duplicates(usable, files, offsets)
    transactions = usable.filter(
        ~pl.col("line").is_in(duplicates.get_column("line").implode())
    ).drop("_hash")
    del usable
    duplicate = pl.lit(REASONS.index("duplicate_row"), pl.UInt8).alias("_reason")
    rejected = [
        pl.concat([f.rejected, _within(duplicates, at, f.span).with_columns(duplicate)]).sort(
            "line"
        )
        for f, at in zip(files, offsets, strict=True)
    ]
    rejects = pl.concat(
        [
            _rejects(r, source).select(pl.lit(f.source.name).alias("file"), pl.all())
            if several
            else _rejects(r, source)
            for f, r in zip(files, rejected, strict=True)
        ]
    )
    return ReadResult(
        transactions=transactions,
        rejects=rejects,
        members=_members(transactions, pl.concat(rejected)),
        rows_in=sum(f.rows for f in files),
    )


def source_columns(columns: Mapping[str, str]) -> dict[str, str]:
    """The file's column of each canonical name, checked: exactly the five, no column twice."""
    missing = [name for name in CANONICAL if name not in columns]
    unknown = sorted(set(columns) - set(CANONICAL))
    if missing or unknown:
        raise ValueError(
            f"the column mapping must name exactly {', '.join(CANONICAL)}"
            f" (missing: {missing or 'none'}, unknown: {unknown or 'none'})"
        )
    source = {name: columns[name] for name in CANONICAL}
    if len(set(source.values())) != len(source):
        raise ValueError(f"the column mapping maps two names to one column: {source}")
    return source


def _first_pass(
    source: TextSource, chunks: TextChunks, parse: Callable[[pl.LazyFrame], pl.LazyFrame]
) -> _FileRows:
    """Parse a file chunk by chunk into usable rows and rejects."""
    usable: list[pl.DataFrame] = []
    rejected: list[pl.DataFrame] = []
    rows = span = 0
    for text in chunks():
        parsed = parse(text.lazy()).collect()
        rows += parsed.height
        if parsed.height:
            span = max(span, int(parsed.get_column("line").max()) + 1)  # type: ignore[arg-type]
        ok = parsed.get_column("_reason").is_null()
        usable.append(
            parsed.filter(ok).select(
                "line", *(pl.col(f"_{name}").alias(name) for name in CANONICAL), "_hash"
            )
        )
        rejected.append(parsed.filter(~ok).select("line", *_own_text(CANONICAL), "_reason"))
    return _FileRows(source, pl.concat(usable, rechunk=False), pl.concat(rejected), rows, span)


def _rejects(rejected: pl.DataFrame, source: Mapping[str, str]) -> pl.DataFrame:
    """Rejected rows as ``rejects.csv`` has them: line, raw values (null for empty), reason."""
    return rejected.select(
        "line",
        *(pl.when(pl.col(name) != "").then(pl.col(name)).alias(source[name]) for name in CANONICAL),
        pl.col("_reason")
        .replace_strict(dict(enumerate(REASONS)), return_dtype=pl.String)
        .alias("reason"),
    )


def _within(rows: pl.DataFrame, offset: int, span: int) -> pl.DataFrame:
    """The rows of one file among those of all files, its own line numbers given back."""
    line = pl.col("line")
    return rows.filter(line.is_between(offset, offset + span, closed="left")).with_columns(
        line - offset
    )


def _own_text(names: Sequence[str]) -> list[pl.Expr]:
    """The text columns as strings of their own bytes.

    A column filtered out of a chunk still holds the text of the whole chunk; the rejects,
    kept across all chunks, would keep the text of the whole file.
    """
    return [pl.concat_str(pl.col(name), pl.lit("")).alias(name) for name in names]


def _duplicates(
    usable: pl.DataFrame, files: Sequence[_FileRows], offsets: Sequence[int]
) -> pl.DataFrame:
    """The usable rows whose raw values are exactly those of an earlier row: line, raw values.

    Rows of equal raw values have equal hashes, so only the rows whose hash repeats are read
    again from their files, and their raw text compared. In an input without duplicates that
    is none, and nothing is read again.
    """
    repeated = _repeated(usable.get_column("_hash"))
    if repeated.is_empty():
        return pl.DataFrame(schema=[("line", pl.Int64), *((name, pl.String) for name in CANONICAL)])
    suspects = usable.filter(pl.col("_hash").is_in(repeated.implode())).select("line")
    again = []
    for file, at in zip(files, offsets, strict=True):
        lines = _within(suspects, at, file.span).get_column("line")
        if lines.is_empty():
            continue

        def suspected(chunks: TextChunks, lines: pl.Series = lines) -> pl.DataFrame:
            return pl.concat(
                text.filter(pl.col("line").is_in(lines.implode())).select(
                    "line", *_own_text(CANONICAL)
                )
                for text in chunks()
            )

        again.append(file.source.read(suspected).with_columns(pl.col("line") + at))
    return _exact_duplicates(pl.concat(again))


def _repeated(hashes: pl.Series) -> pl.Series:
    """The values that occur more than once in ``hashes``.

    Sorting a copy takes 8 bytes a row where a hash table over 4 million rows takes several
    times that, at the very moment the whole result is in memory.
    """
    ordered = hashes.sort()
    later = ordered.slice(1)
    return later.filter(later == ordered.slice(0, later.len())).unique()


def _exact_duplicates(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows whose values are exactly those of an earlier row (by ``line``)."""
    return rows.sort("line").filter(~pl.struct(CANONICAL).is_first_distinct())


def _members(transactions: pl.DataFrame, rejects: pl.DataFrame) -> pl.Series:
    """Every distinct non-empty member id (stripped), of usable and rejected rows, sorted.

    Neither is the member id of a malformed row (where its fields begin and end is a guess) nor
    one that is not UTF-8 (two different ids may read as the same text).
    """
    unreadable = [REASONS.index(MALFORMED), REASONS.index(f"{BAD_ENCODING}member_id")]
    readable = rejects.filter(~pl.col("_reason").is_in(unreadable))
    rejected = readable.get_column("member_id").str.strip_chars()
    ids = pl.concat([transactions.get_column("member_id").unique(), rejected])
    return ids.filter(ids != "").unique().sort().alias("member_id")
