"""A generator of synthetic transaction files shaped like the default partner's ``member_data.csv``.

Random numbers come from a counter-based generator (splitmix64 over ``(seed, stream, index)``)
written as polars expressions: vectorised, and independent of any library's random generator,
so that a seed gives the same file across polars versions.

The shape copied from the real file: about 4.75 usable rows per member, geometrically
distributed; types buy, gift and redeem about equally often; points a multiple of 100 up to
10,000, negative for a redemption; revenue points / (100·k) for k in 1..20, 0.0 for a
redemption; timestamps ``YYYY-MM-DD HH:MM:SS``. And its quirks: about 10% of members have a
single row with only the member id, about 1 row in 400 has no member id, and rows are shuffled,
so that a member's rows are neither contiguous nor in time order.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from offerflow.config import CsvFormat
from offerflow.pipeline.inputs.parsing import CANONICAL, TYPES
from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS
from offerflow.pipeline.inputs.timestamps import timestamp_writer

__all__ = ["generate_transactions", "write_transactions"]

_MASK64 = 2**64 - 1
_MASK32 = 2**32
_ID_ONLY_SHARE = 0.10
_NO_MEMBER_ID_SHARE = 1 / 400
_MEAN_ROWS = 4.75  # usable rows per member with transactions, as in the real file
_MAX_ROWS = 60

# one independent random stream per use
_STREAM_ID, _STREAM_ID_ONLY, _STREAM_COUNT = 1, 2, 3
_STREAM_TS, _STREAM_VALUES, _STREAM_NO_ID, _STREAM_SHUFFLE = 4, 5, 6, 7


def generate_transactions(
    members: int,
    *,
    seed: int,
    start: date = date(2020, 1, 1),
    end: date = date(2024, 1, 5),
    columns: Mapping[str, str] = DEFAULT_COLUMNS,
    type_spelling: Mapping[str, str] | None = None,
    timestamp_format: str = "%Y-%m-%d %H:%M:%S",
    numbers: CsvFormat | None = None,
    timezone: str | None = None,
) -> pl.DataFrame:
    """Generate the transactions of ``members`` members, timestamps in ``[start, end)``.

    All columns are text, named by ``columns`` (canonical name -> column name);
    ``type_spelling`` spells a type the partner's way (e.g. ``{"buy": "PURCHASE"}``) and
    ``timestamp_format`` writes timestamps (UTC, or local times of ``timezone``) with a strftime
    pattern, or as ``epoch_s`` / ``epoch_ms``; ``numbers`` spells points and revenue with its
    decimal mark and thousands separator. The same arguments give the same frame.
    """
    if not 0 <= members < _MASK32:
        raise ValueError(f"members must be in [0, 2**32), got {members}")
    if start >= end:
        raise ValueError(f"start {start} must be before end {end}")
    unknown = sorted(set(type_spelling or {}) - set(TYPES))
    if unknown:
        raise ValueError(f"type_spelling may only spell {TYPES}, not {unknown}")
    missing = [name for name in CANONICAL if name not in columns]
    if missing:
        raise ValueError(f"columns must name a column for each of {CANONICAL}, missing {missing}")
    spelling = {kind: kind for kind in TYPES} | dict(type_spelling or {})
    names = {name: columns[name] for name in CANONICAL}

    member = pl.int_range(0, members, dtype=pl.UInt64)
    id_only = _uniform(seed, _STREAM_ID_ONLY, member) < _ID_ONLY_SHARE
    geometric = (
        1 + (_uniform(seed, _STREAM_COUNT, member).log() / math.log(1 - 1 / _MEAN_ROWS)).floor()
    )
    plan = pl.select(
        member_id=_member_id(seed, members),
        id_only=id_only,
        rows=pl.when(id_only).then(1).otherwise(geometric.clip(1, _MAX_ROWS)).cast(pl.Int64),
    )

    first = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    span = int((datetime.combine(end, datetime.min.time(), tzinfo=UTC) - first).total_seconds())
    row = pl.col("row")
    values = pl.col("values")
    # type, points and rate from separate bits of one draw
    magnitude = ((1 + values // 2**16 % 100) * 100).cast(pl.Int64)
    rate = (1 + values // 2**40 % 20) * 100
    redeem = pl.col("kind") == TYPES.index("redeem")
    present = ~pl.col("id_only")
    spelled = {index: spelling[kind] for index, kind in enumerate(TYPES)}
    frame = (
        plan.lazy()
        .select(pl.col("member_id", "id_only").repeat_by("rows").explode())
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.UInt64))
        .with_columns(
            values=_bits(seed, _STREAM_VALUES, row),
            seconds=(_bits(seed, _STREAM_TS, row) % span).cast(pl.Int64),
            has_id=_uniform(seed, _STREAM_NO_ID, row) >= _NO_MEMBER_ID_SHARE,
            order=_bits(seed, _STREAM_SHUFFLE, row),
        )
        .with_columns(kind=(values % len(TYPES)).cast(pl.UInt8))
        .select(
            pl.when(pl.col("has_id")).then(pl.col("member_id")).alias(names["member_id"]),
            pl.when(present)
            .then(
                timestamp_writer(timestamp_format, timezone)(
                    pl.lit(first) + pl.duration(seconds="seconds")
                )
            )
            .alias(names["ts"]),
            pl.when(present)
            .then(pl.col("kind").replace_strict(spelled, return_dtype=pl.String))
            .alias(names["type"]),
            pl.when(present)
            .then(pl.when(redeem).then(-magnitude).otherwise(magnitude).cast(pl.String))
            .alias(names["points"]),
            pl.when(present)
            .then(pl.when(redeem).then(0.0).otherwise(magnitude / rate).cast(pl.String))
            .alias(names["revenue"]),
            "order",
        )
        .sort("order")
        .drop("order")
        .collect()
    )
    if numbers is None or (numbers.decimal, numbers.thousands) == (".", None):
        return frame
    spell = functools.partial(_spelled, decimal=numbers.decimal, thousands=numbers.thousands)
    amounts = pl.col(names["points"], names["revenue"])
    return frame.with_columns(amounts.map_elements(spell, return_dtype=pl.String))


def _spelled(text: str, *, decimal: str, thousands: str | None) -> str:
    """A number's plain text (``-1234.5``) with another decimal mark, its digits grouped."""
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.removeprefix("-").partition(".")
    if thousands is not None:
        whole = f"{int(whole):,}".replace(",", thousands)
    return sign + whole + (decimal + fraction if fraction else "")


def write_transactions(df: pl.DataFrame, path: Path, csv: CsvFormat | None = None) -> None:
    """Write a transaction frame as CSV or Parquet, chosen by the suffix of ``path``; a CSV
    file with the delimiter, quote and encoding ``csv`` gives, RFC 4180 in UTF-8 without (the
    numbers are written as :func:`generate_transactions` spelled them)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        layout = csv or CsvFormat()
        text = df.write_csv(separator=layout.delimiter, quote_char=layout.quote)
        Path(path).write_bytes(text.encode(layout.encoding))
    elif suffix in {".parquet", ".pq"}:
        df.write_parquet(path)
    else:
        raise ValueError(f"cannot tell the format of {path}: use a .csv or .parquet suffix")


def _u64(value: int) -> pl.Expr:
    return pl.lit(value & _MASK64, dtype=pl.UInt64)


def _splitmix64(x: pl.Expr) -> pl.Expr:
    """The splitmix64 finaliser; polars' UInt64 arithmetic wraps as the algorithm needs."""
    z = x + _u64(0x9E3779B97F4A7C15)
    z = (z ^ (z // _u64(2**30))) * _u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z // _u64(2**27))) * _u64(0x94D049BB133111EB)
    return z ^ (z // _u64(2**31))


def _stream_key(seed: int, stream: int) -> int:
    """A well-mixed 64-bit key per (seed, stream): splitmix64 in plain Python."""
    z = (seed * 0x100000001B3 + stream * 0x9E3779B97F4A7C15) & _MASK64
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = ((z ^ (z >> shift)) * factor) & _MASK64
    return z ^ (z >> 31)


def _bits(seed: int, stream: int, index: pl.Expr) -> pl.Expr:
    """64 random bits per index, independent across (seed, stream)."""
    return _splitmix64(index * _u64(0xD1B54A32D192ED03) + _u64(_stream_key(seed, stream)))


def _uniform(seed: int, stream: int, index: pl.Expr) -> pl.Expr:
    """A uniform float in (0, 1] per index."""
    return ((_bits(seed, stream, index) // _u64(2**11)) + _u64(1)).cast(pl.Float64) * 2.0**-53


def _member_id(seed: int, members: int) -> pl.Series:
    """8 uppercase hex digits, unique per member: a bijection of the 32-bit integers."""
    x = pl.int_range(0, members, dtype=pl.UInt64) + _u64(_stream_key(seed, _STREAM_ID))
    x = x % _MASK32
    for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ((x ^ (x // 2**shift)) * factor) % _MASK32
    x = x ^ (x // 2**16)
    words = pl.select(high=x // 2**16, low=x % 2**16)
    hex4 = pl.Series([f"{word:04X}" for word in range(2**16)])
    return (hex4.gather(words["high"]) + hex4.gather(words["low"])).rename("member_id")
