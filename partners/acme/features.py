"""Acme's own features: polars aggregations over a member's canonical transactions."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from offerflow.pipeline import FeatureContext


def features(ctx: FeatureContext) -> Mapping[str, pl.Expr]:
    """Named expressions, evaluated per member over rows sorted by time (cheap and pure)."""
    revenue = pl.col("revenue")
    total = revenue.sum()
    from_gifts = revenue.filter(pl.col("type") == "gift").sum()
    return {
        "MAX_POINTS_BOUGHT": pl.col("points").max(),
        "SHARE_OF_REVENUE_FROM_GIFTS": pl.when(total > 0).then(from_gifts / total).otherwise(0.0),
    }
