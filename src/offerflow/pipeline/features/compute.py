"""Computing features: the selected expressions in one lazy group-by per member.

:func:`compute_features` evaluates the selected expressions in one lazy
``group_by("member_id").agg(...)`` over the usable transactions sorted by ``(ts, line)``, so an
expression can rely on row order: ``tail(3)`` is the three most recent transactions, ties in
timestamp broken by file order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from offerflow.config import DEFAULT_FEATURES
from offerflow.pipeline.features.builtin import DEFAULT_REGISTRY
from offerflow.pipeline.features.registry import FeatureContext, FeatureRegistry

__all__ = ["CANONICAL_SCHEMA", "PART_ROWS", "compute_features"]

#: the columns of the canonical transaction table that features are computed over
CANONICAL_SCHEMA = pl.Schema(
    {
        "line": pl.Int64(),
        "member_id": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "type": pl.String(),
        "points": pl.Float64(),
        "revenue": pl.Float64(),
    }
)


#: rows of transactions aggregated at a time: the group-by's working memory is several times its
#: input (a member's last N rows are gathered per group), so a larger input is aggregated a
#: hash-partition of members at a time (``docs/architecture.md``, "polars for reading and
#: features")
PART_ROWS = 500_000


def compute_features(
    transactions: pl.DataFrame | pl.LazyFrame,
    names: Sequence[str] = DEFAULT_FEATURES,
    *,
    as_of: datetime,
    registry: FeatureRegistry = DEFAULT_REGISTRY,
) -> pl.DataFrame:
    """One row per member with usable transactions: member_id and the named features.

    ``transactions`` is the canonical table (``ReadResult.transactions``); rows are ordered by
    ``(ts, line)`` before aggregating, or by ``ts`` then frame order when there is no ``line``.
    The result is sorted by member_id. A naive ``as_of`` is taken as UTC.
    """
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"features named more than once: {duplicates}")
    moment = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    exprs = registry.exprs(names, FeatureContext(as_of=moment))

    frame = transactions.collect() if isinstance(transactions, pl.LazyFrame) else transactions
    parts = max(1, math.ceil(frame.height / PART_ROWS))
    if parts == 1:
        return _aggregate(frame, exprs)
    # A member's rows all fall in one part, in frame order: each part's features are exactly
    # those the whole frame would give its members.
    bucket = frame.get_column("member_id").hash() % parts
    return pl.concat(_aggregate(frame.filter(bucket == part), exprs) for part in range(parts)).sort(
        "member_id"
    )


def _aggregate(frame: pl.DataFrame, exprs: Sequence[pl.Expr]) -> pl.DataFrame:
    """The features of every member of ``frame``, in one lazy pass: sort, group, aggregate."""
    return (
        frame.lazy()
        .with_columns(_utc(frame.schema["ts"]))
        .sort(_order(frame), maintain_order=True)
        .group_by("member_id")
        .agg(exprs)
        .sort("member_id")
        .collect()
    )


def _order(frame: pl.DataFrame) -> list[str]:
    """The sort keys that order rows by (ts, line), ties in frame order."""
    if "line" not in frame.columns:
        return ["ts"]
    # A stable sort by ts alone is several times faster than by (ts, line) and, on a frame
    # already in line order (as the reader makes it), gives the same order.
    in_line_order = not frame.select((pl.col("line").diff() < 0).any()).item()
    return ["ts"] if in_line_order else ["ts", "line"]


def _utc(dtype: pl.DataType) -> pl.Expr:
    """The ``ts`` column in UTC, so that calendar dates are UTC dates."""
    ts = pl.col("ts")
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone == "UTC":
        return ts
    if dtype.time_zone is None:
        return ts.dt.replace_time_zone("UTC")
    return ts.dt.convert_time_zone("UTC")
