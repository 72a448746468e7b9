"""A partner's feature module, as a partner would write one: the good case of the tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import polars as pl

from offerflow.pipeline.features import FeatureContext


def features(ctx: FeatureContext) -> Mapping[str, pl.Expr]:
    """MAX_POINTS_BOUGHT, SHARE_OF_REVENUE_FROM_GIFTS and REVENUE_LAST_30_DAYS."""
    revenue = pl.col("revenue")
    total = revenue.sum()
    from_gifts = revenue.filter(pl.col("type") == "gift").sum()
    # the 30 UTC calendar days up to and including the as-of date
    since = ctx.as_of_date - timedelta(days=29)
    return {
        "MAX_POINTS_BOUGHT": pl.col("points").max(),
        "SHARE_OF_REVENUE_FROM_GIFTS": pl.when(total > 0).then(from_gifts / total).otherwise(0.0),
        "REVENUE_LAST_30_DAYS": revenue.filter(pl.col("ts").dt.date() >= since).sum(),
    }
