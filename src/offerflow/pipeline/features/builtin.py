"""The built-in features: the eight of the job, a few more, and three families.

The default set is the eight features of the job (``docs/architecture.md``, "The job"); their
results are Float64 except DAYS_SINCE_LAST_TRANSACTION (Int64). Of the other built-ins, the
counts of transactions and of days are Int64 and the rest Float64.
"""

from __future__ import annotations

import functools

import polars as pl

from offerflow.pipeline.features.registry import (
    FeatureContext,
    FeatureFamily,
    FeatureFn,
    FeatureRegistry,
)

__all__ = ["DEFAULT_REGISTRY"]

#: an N past any frame's row count and date range: a larger N means the same, and would not fit
#: the integers polars slices and compares with
_BEYOND_ANY_FRAME = 2**40


def _average(column: str) -> FeatureFn:
    return lambda ctx: pl.col(column).sum() / pl.len()


def _total(column: str) -> FeatureFn:
    return lambda ctx: pl.col(column).sum().cast(pl.Float64)


def _last_average(column: str, *, n: int) -> FeatureFn:
    """The mean of ``column`` over the member's n most recent transactions (all, if fewer)."""
    last = min(n, _BEYOND_ANY_FRAME)
    return lambda ctx: pl.col(column).tail(last).mean()


def _share(kind: str) -> FeatureFn:
    return lambda ctx: (pl.col("type") == kind).sum() / pl.len()


def _recent_share(*, kind: str, n: int) -> FeatureFn:
    """The share of ``kind`` among the transactions on the last n calendar days up to as-of.

    The window is the n UTC calendar dates ending with the as-of date, that date included: n = 1
    is the as-of date alone, from 00:00:00 on. The share is 0.0 when the window is empty.
    """
    days = min(n, _BEYOND_ANY_FRAME)

    def share(ctx: FeatureContext) -> pl.Expr:
        age = (pl.lit(ctx.as_of_date) - pl.col("ts").dt.date()).dt.total_days()
        recent = age.is_between(0, days - 1)
        in_window = recent.sum()
        of_kind = (recent & (pl.col("type") == kind)).sum()
        return pl.when(in_window > 0).then(of_kind / in_window).otherwise(0.0).cast(pl.Float64)

    return share


def _days_since(latest: bool) -> FeatureFn:
    def days(ctx: FeatureContext) -> pl.Expr:
        ts = pl.col("ts").max() if latest else pl.col("ts").min()
        # A difference of calendar dates, not of instants: 23:59 yesterday is 1 day ago.
        return (pl.lit(ctx.as_of_date) - ts.dt.date()).dt.total_days()

    return days


_DEFAULTS: dict[str, FeatureFn] = {
    "AVG_POINTS_BOUGHT": _average("points"),
    "AVG_REVENUE_USD": _average("revenue"),
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": _last_average("points", n=3),
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": _last_average("revenue", n=3),
    "PCT_BUY_TRANSACTIONS": _share("buy"),
    "PCT_GIFT_TRANSACTIONS": _share("gift"),
    "PCT_REDEEM_TRANSACTIONS": _share("redeem"),
    "DAYS_SINCE_LAST_TRANSACTION": _days_since(latest=True),
}
_EXTRAS: dict[str, FeatureFn] = {
    "TRANSACTION_COUNT": lambda ctx: pl.len().cast(pl.Int64),
    "TOTAL_POINTS_BOUGHT": _total("points"),
    "TOTAL_REVENUE_USD": _total("revenue"),
    "DAYS_SINCE_FIRST_TRANSACTION": _days_since(latest=False),
}
_FAMILIES = (
    FeatureFamily(
        "LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT", functools.partial(_last_average, "points")
    ),
    FeatureFamily(
        "LAST_<N>_TRANSACTIONS_AVG_REVENUE_USD", functools.partial(_last_average, "revenue")
    ),
    FeatureFamily("PCT_<TYPE>_TRANSACTIONS_LAST_<N>_DAYS", _recent_share),
)

#: the built-in features: the default set, then TRANSACTION_COUNT, TOTAL_POINTS_BOUGHT,
#: TOTAL_REVENUE_USD and DAYS_SINCE_FIRST_TRANSACTION; and three families, for any N >= 1:
#: LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT and LAST_<N>_TRANSACTIONS_AVG_REVENUE_USD, the mean
#: over the N most recent transactions (all of them if fewer), ties in file order, as LAST_3;
#: PCT_<TYPE>_TRANSACTIONS_LAST_<N>_DAYS, the share of type TYPE (BUY, GIFT or REDEEM) among the
#: transactions on the last N UTC calendar days up to and including the as-of date (N = 1 is the
#: as-of date alone), 0.0 when there are none
DEFAULT_REGISTRY = FeatureRegistry(_DEFAULTS | _EXTRAS, _FAMILIES)
