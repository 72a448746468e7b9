"""A transaction row's text parsed: its values, and the first reason it cannot be used, if any.

One row's verdict needs no other row, so it lives apart from the reader, which joins the files
and finds the duplicates (``duplicate_row`` needs every row): the partition split of a
distributed run asks the same verdicts of a chunk with :func:`reject_reasons`.

A row is checked in the order of :data:`REASONS` and rejected with the first reason that
applies; ``duplicate_row``, the last, is the reader's to give.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime

import polars as pl

from offerflow.config import CsvFormat
from offerflow.pipeline.inputs.sources import BAD_ENCODING, MALFORMED
from offerflow.pipeline.inputs.timestamps import timestamp_parser, utc

__all__ = ["CANONICAL", "REASONS", "TYPES", "reject_reasons", "row_parser"]

#: the canonical column names of a transaction, in the order rejects are checked
CANONICAL = ("member_id", "ts", "type", "points", "revenue")
#: the transaction types, as they appear in the canonical table
TYPES = ("buy", "gift", "redeem")

_NUMBERS = ("points", "revenue")
#: the reject reason codes, in the order they are checked: the first that applies is given.
#: From the bytes up: a record that is not well-formed CSV, a value that is not UTF-8, then
#: missing values, values that do not parse, values that parse but cannot be used, and last
#: the duplicates.
REASONS = (
    MALFORMED,
    *(f"{BAD_ENCODING}{name}" for name in CANONICAL),
    "missing_member_id",
    *(f"missing_field:{name}" for name in CANONICAL[1:]),
    "bad_timestamp",
    "future_timestamp",
    "unknown_type",
    *(f"bad_number:{name}" for name in _NUMBERS),
    "duplicate_row",
)


def row_parser(
    *,
    as_of: datetime,
    type_aliases: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    csv: CsvFormat | None = None,
) -> Callable[[pl.LazyFrame], pl.LazyFrame]:
    """How a text chunk becomes each row's parsed values, reject reason, hash and raw text.

    The chunk is one :data:`~offerflow.pipeline.inputs.sources.TextChunks` give (``line``, the
    canonical columns, ``problem``). The result has ``line``; ``_member_id``, ``_ts``,
    ``_type``, ``_points``, ``_revenue`` (the parsed values); ``_reason`` (an index into
    :data:`REASONS`, null for a usable row: ``duplicate_row`` is left to the reader); ``_hash``
    (a 64-bit hash of the raw values, equal for equal rows) and the raw canonical columns.
    ``csv`` gives the numbers' decimal mark and thousands separator (see :func:`_number`).
    Raises ValueError for a type alias whose target is not one of :data:`TYPES`.
    """
    types = _type_mapping(type_aliases)
    moment = utc(as_of)
    parse_ts = timestamp_parser(timestamp_format, timezone)
    numbers = csv or CsvFormat()

    def parse(raw: pl.LazyFrame) -> pl.LazyFrame:
        return _parsed(raw, moment, types, parse_ts, numbers)

    return parse


def reject_reasons(
    text: pl.DataFrame,
    *,
    as_of: datetime,
    type_aliases: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    csv: CsvFormat | None = None,
) -> pl.Series:
    """Each row's reject reason but ``duplicate_row`` (which needs every row), null when usable.

    ``text`` is a text chunk as :data:`TextChunks` give them (``line``, the canonical columns,
    ``problem``).
    """
    parse = row_parser(
        as_of=as_of,
        type_aliases=type_aliases,
        timestamp_format=timestamp_format,
        timezone=timezone,
        csv=csv,
    )
    codes = parse(text.lazy()).select("_reason").collect().get_column("_reason")
    return codes.replace_strict(dict(enumerate(REASONS)), default=None, return_dtype=pl.String)


def _type_mapping(aliases: Mapping[str, str] | None) -> dict[str, str]:
    mapping = {kind: kind for kind in TYPES}
    for alias, kind in (aliases or {}).items():
        key = alias.strip().lower()
        if kind not in TYPES or (key in TYPES and key != kind):
            raise ValueError(f"type alias {alias!r} -> {kind!r}: the target must be one of {TYPES}")
        mapping[key] = kind
    return mapping


def _parsed(
    raw: pl.LazyFrame,
    as_of: datetime,
    types: Mapping[str, str],
    parse_ts: Callable[[pl.Expr], pl.Expr],
    numbers: CsvFormat,
) -> pl.LazyFrame:
    """Each row's parsed values, reject reason, raw values' hash and raw text.

    The reason is null for a usable row; ``duplicate_row`` is left to the reader.
    """
    text = {name: pl.col(name).str.strip_chars() for name in CANONICAL}
    parsed = raw.with_columns(
        *(
            text[name].str.len_bytes().fill_null(0).eq(0).alias(f"_missing_{name}")
            for name in CANONICAL
        ),
        pl.when(text["member_id"] != "").then(text["member_id"]).alias("_member_id"),
        parse_ts(text["ts"]).alias("_ts"),
        text["type"].str.to_lowercase().replace_strict(types, default=None).alias("_type"),
        *(_number(text[name], numbers).alias(f"_{name}") for name in _NUMBERS),
    )
    checks = [pl.col("problem") == MALFORMED]
    checks += [pl.col("problem") == f"{BAD_ENCODING}{name}" for name in CANONICAL]
    checks += [pl.col(f"_missing_{name}") for name in CANONICAL]
    checks += [pl.col("_ts").is_null(), pl.col("_ts") > as_of, pl.col("_type").is_null()]
    checks += [pl.col(f"_{name}").is_null() | ~pl.col(f"_{name}").is_finite() for name in _NUMBERS]
    # The first failing check wins. A small integer per row is much cheaper than a string:
    # only the rejects get the reason's name. `duplicate_row` is decided after the last chunk.
    code = pl.coalesce(
        pl.when(check).then(pl.lit(index, pl.UInt8)) for index, check in enumerate(checks)
    )
    return parsed.select(
        "line",
        *(pl.col(f"_{name}") for name in ("member_id", "ts", "type", *_NUMBERS)),
        code.alias("_reason"),
        _row_hash().alias("_hash"),
        *CANONICAL,
    )


def _number(text: pl.Expr, numbers: CsvFormat) -> pl.Expr:
    """A number's text as a float, null when it is none.

    With a thousands separator, a number holding one must group its digits by three
    (``1.234.567,5``: ``1.23,5`` is none), and the separators are dropped. With a decimal
    comma, a number still holding a ``.`` is none: ``1.234`` may mean a thousand there.
    """
    separator, decimal = numbers.thousands, numbers.decimal
    if separator is not None:
        t, d = re.escape(separator), re.escape(decimal)
        grouped = rf"^[+-]?\d{{1,3}}(?:{t}\d{{3}})+(?:{d}\d*)?$"
        ungrouped = text.str.replace_all(separator, "", literal=True)
        text = (
            pl.when(~text.str.contains(separator, literal=True))
            .then(text)
            .when(text.str.contains(grouped))
            .then(ungrouped)
        )
    if decimal == ",":
        comma = text.str.replace(",", ".", literal=True)
        text = pl.when(~text.str.contains(".", literal=True)).then(comma)
    return text.cast(pl.Float64, strict=False)


def _row_hash() -> pl.Expr:
    """A 64-bit hash of a row's raw values: equal for equal rows, rarely for others."""
    return pl.struct(CANONICAL).hash()
