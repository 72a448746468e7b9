"""Timestamps of a partner's input, and the as-of instant of a run.

Timestamps are UTC: ``YYYY-MM-DD HH:MM:SS`` (polars' fast path), or ISO 8601 with ``T``, a
fraction, ``Z`` or an offset (converted to UTC), or a bare date; a partner may give a strftime
pattern instead, or write seconds or milliseconds since the epoch. What does not parse is null,
for the reader to reject.

A partner whose timestamps are local times gives its time zone (``input.timezone``): a
timestamp written without an offset is then a time of that zone, converted to UTC. A time the
clocks skipped (the hour a spring-forward gap removes) is null, as no instant has it; a time
they went through twice (the autumn hour) is taken as the first of the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time

import polars as pl

__all__ = ["parse_as_of", "timestamp_parser", "timestamp_writer", "utc"]

# The common case, parsed by polars' fast path; everything else goes through _TS_ANY.
_TS_PLAIN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
# A date, optionally with a time (`T`, `t` or a space between), fraction and `Z` or ±HH:MM offset.
_TS_ANY = (
    r"^(?<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?<time>\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(?<offset>[Zz]|[+-]\d{2}:\d{2})?)?$"
)
_AS_OF = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_as_of(text: str | None, *, now: datetime | None = None) -> datetime:
    """The as-of instant of a run: ``now`` (UTC) for None, the end of the UTC day for YYYY-MM-DD."""
    if text is None:
        return utc(now) if now is not None else datetime.now(UTC)
    stripped = text.strip()
    if not _AS_OF.fullmatch(stripped):
        raise ValueError(f"as-of must be a date YYYY-MM-DD, got {text!r}")
    try:
        day = date.fromisoformat(stripped)
    except ValueError as exc:
        raise ValueError(f"as-of {text!r} is not a calendar date: {exc}") from None
    return datetime.combine(day, time.max, tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def timestamp_parser(pattern: str | None, zone: str | None = None) -> Callable[[pl.Expr], pl.Expr]:
    """How a column of timestamp text becomes UTC datetimes: the accepted ISO forms without a
    pattern, seconds or milliseconds since the epoch for ``epoch_s`` / ``epoch_ms``, else the
    partner's strftime ``pattern``; a timestamp without an offset is a time of ``zone`` (an IANA
    name), or UTC when None."""
    if pattern in _EPOCH_MICROSECONDS:
        return _since_epoch(_EPOCH_MICROSECONDS[pattern])
    zone = zone or "UTC"
    return _iso(zone) if pattern is None else _patterned(pattern, zone)


def timestamp_writer(pattern: str, zone: str | None = None) -> Callable[[pl.Expr], pl.Expr]:
    """How UTC datetimes are written as a partner writes them: the inverse of
    :func:`timestamp_parser` for ``epoch_s`` / ``epoch_ms`` and a strftime ``pattern``, as
    times of ``zone`` when given."""
    if pattern in _EPOCH_MICROSECONDS:
        per_unit = _EPOCH_MICROSECONDS[pattern]
        return lambda moment: (moment.dt.epoch("us") // per_unit).cast(pl.String)
    if zone is not None:
        return lambda moment: moment.dt.convert_time_zone(zone).dt.strftime(pattern)
    return lambda moment: moment.dt.strftime(pattern)


#: microseconds per unit of the epoch formats of ``input.timestamp_format``
_EPOCH_MICROSECONDS = {"epoch_s": 1_000_000, "epoch_ms": 1_000}
#: the epoch times accepted: 1971-01-01 to 2200-01-01 UTC, in microseconds. Outside is a unit
#: mixed up: seconds read as milliseconds fall in 1970, milliseconds read as seconds after 2200
_EPOCH_RANGE_US = (31_536_000 * 10**6, 7_258_118_400 * 10**6)


def _since_epoch(per_unit: int) -> Callable[[pl.Expr], pl.Expr]:
    """Parse a count of units since 1970-01-01 UTC, whole or decimal; null where the text is
    not a number or lies outside 1971-2200."""

    def parse(text: pl.Expr) -> pl.Expr:
        number = pl.when(text.str.contains(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")).then(text)
        micros = (number.cast(pl.Float64, strict=False) * per_unit).round()
        low, high = _EPOCH_RANGE_US
        return (
            pl.when(micros.is_between(low, high))
            .then(micros.cast(pl.Int64))
            .cast(pl.Datetime("us", "UTC"))
        )

    return parse


def _in_zone(naive: pl.Expr, zone: str) -> pl.Expr:
    """Naive datetimes as times of ``zone``, in UTC: null for a time the clocks skipped, the
    first of the two for a time they went through twice."""
    if zone == "UTC":
        return naive.dt.replace_time_zone("UTC")
    local = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _iso(zone: str) -> Callable[[pl.Expr], pl.Expr]:
    """Parse the accepted ISO forms, a time without an offset being one of ``zone``; null where
    the text is none of them."""

    def parse(text: pl.Expr) -> pl.Expr:
        plain = text.str.contains(_TS_PLAIN)
        fast = text.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
        # Only the rows the fast path did not take are taken apart: nulls cost next to nothing.
        parts = pl.when(~plain).then(text).str.extract_groups(_TS_ANY)
        offset = parts.struct["offset"]
        day_time = pl.concat_str(
            parts.struct["date"], pl.lit("T"), parts.struct["time"].fill_null("00:00:00")
        )
        naive = (
            pl.when(plain)
            .then(fast)
            .otherwise(
                day_time.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False)
            )
        )
        utc_offset = pl.when(offset.str.to_uppercase() == "Z").then(pl.lit("+00:00"))
        with_offset = pl.concat_str(day_time, utc_offset.otherwise(offset)).str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", strict=False
        )
        return pl.when(offset.is_null()).then(_in_zone(naive, zone)).otherwise(with_offset)

    return parse


def _patterned(pattern: str, zone: str) -> Callable[[pl.Expr], pl.Expr]:
    """Parse timestamps written with a partner's strftime pattern, its times in ``zone``
    unless the pattern has an offset; null where they are not."""
    aware = "%z" in pattern or "%:z" in pattern

    def parse(text: pl.Expr) -> pl.Expr:
        moment = text.str.to_datetime(pattern, time_unit="us", strict=False)
        return moment.dt.convert_time_zone("UTC") if aware else _in_zone(moment, zone)

    return parse
