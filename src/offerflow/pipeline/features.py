"""Per-member features: a registry of named polars expressions over the canonical table.

A feature is a function of the run's :class:`FeatureContext` returning one aggregation
expression. :func:`compute_features` evaluates the selected expressions in one lazy
``group_by("member_id").agg(...)`` over the usable transactions sorted by ``(ts, line)``, so
an expression can rely on row order: ``tail(3)`` is the three most recent transactions, ties in
timestamp broken by file order. A partner adds its own features to a copy of
:data:`DEFAULT_REGISTRY`::

    registry = DEFAULT_REGISTRY.copy()
    registry.register("MAX_POINTS_BOUGHT", lambda ctx: pl.col("points").max())

The default set is the eight features of DESIGN.md §1; their results are Float64 except
DAYS_SINCE_LAST_TRANSACTION (Int64).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import polars as pl

from offerflow.config import DEFAULT_FEATURES

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "FeatureContext",
    "FeatureFn",
    "FeatureRegistry",
    "compute_features",
]


@dataclass(frozen=True, slots=True)
class FeatureContext:
    """What a feature may depend on besides the member's transactions."""

    #: the run's as-of instant (UTC)
    as_of: datetime

    @property
    def as_of_date(self) -> date:
        """The as-of instant's UTC calendar date."""
        return self.as_of.astimezone(UTC).date()


#: builds one aggregation expression, evaluated per member over rows sorted by (ts, line)
FeatureFn = Callable[[FeatureContext], pl.Expr]


class FeatureRegistry:
    """Features by name, in registration order."""

    def __init__(self, features: Mapping[str, FeatureFn] | None = None) -> None:
        self._features: dict[str, FeatureFn] = {}
        for name, fn in (features or {}).items():
            self.register(name, fn)

    def register(self, name: str, fn: FeatureFn) -> None:
        """Add a feature; a name already registered is a ValueError."""
        if not name or name == "member_id":
            raise ValueError(f"{name!r} cannot name a feature")
        if name in self._features:
            raise ValueError(f"feature {name!r} is already registered")
        self._features[name] = fn

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._features)

    def get(self, name: str) -> FeatureFn:
        """The feature called ``name``; an unknown name is a KeyError naming close matches."""
        try:
            return self._features[name]
        except KeyError:
            folded = {known.casefold(): known for known in self._features}
            matches = difflib.get_close_matches(name.casefold(), folded, n=3, cutoff=0.5)
            close = [folded[match] for match in matches]
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"unknown feature {name!r}{hint}") from None

    def exprs(self, names: Iterable[str], ctx: FeatureContext) -> list[pl.Expr]:
        """The aggregation expressions of ``names``, each aliased to its name."""
        return [self.get(name)(ctx).alias(name) for name in names]

    def copy(self) -> FeatureRegistry:
        """A new registry with the same features, to extend without touching this one."""
        return FeatureRegistry(self._features)

    def __contains__(self, name: object) -> bool:
        return name in self._features

    def __len__(self) -> int:
        return len(self._features)


def _share(kind: str) -> FeatureFn:
    return lambda ctx: (pl.col("type") == kind).sum() / pl.len()


def _days_since(latest: bool) -> FeatureFn:
    def days(ctx: FeatureContext) -> pl.Expr:
        ts = pl.col("ts").max() if latest else pl.col("ts").min()
        # A difference of calendar dates, not of instants: 23:59 yesterday is 1 day ago.
        return (pl.lit(ctx.as_of_date) - ts.dt.date()).dt.total_days()

    return days


_DEFAULTS: dict[str, FeatureFn] = {
    "AVG_POINTS_BOUGHT": lambda ctx: pl.col("points").sum() / pl.len(),
    "AVG_REVENUE_USD": lambda ctx: pl.col("revenue").sum() / pl.len(),
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": lambda ctx: pl.col("points").tail(3).mean(),
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": lambda ctx: pl.col("revenue").tail(3).mean(),
    "PCT_BUY_TRANSACTIONS": _share("buy"),
    "PCT_GIFT_TRANSACTIONS": _share("gift"),
    "PCT_REDEEM_TRANSACTIONS": _share("redeem"),
    "DAYS_SINCE_LAST_TRANSACTION": _days_since(latest=True),
}
_EXTRAS: dict[str, FeatureFn] = {
    "TRANSACTION_COUNT": lambda ctx: pl.len().cast(pl.Int64),
    "TOTAL_POINTS_BOUGHT": lambda ctx: pl.col("points").sum(),
    "TOTAL_REVENUE_USD": lambda ctx: pl.col("revenue").sum(),
    "DAYS_SINCE_FIRST_TRANSACTION": _days_since(latest=False),
}

#: the built-in features: the default set, then TRANSACTION_COUNT, TOTAL_POINTS_BOUGHT,
#: TOTAL_REVENUE_USD and DAYS_SINCE_FIRST_TRANSACTION
DEFAULT_REGISTRY = FeatureRegistry(_DEFAULTS | _EXTRAS)


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
