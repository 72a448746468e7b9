"""The report's data: a run's tables aggregated (counts, bins, arrays of values) for the page.

Reading and aggregating is apart from drawing the page, so that the page's sections
(:mod:`~offerflow.pipeline.outputs.report.page`) get figures, never a run's tables whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import polars as pl

from offerflow.pipeline.outputs.drift import Values, finite_values, value_columns
from offerflow.pipeline.outputs.history import PastRun

__all__ = ["attempts", "per_bin", "run_start", "value_arrays"]

#: bin widths of the curves over time, in seconds: the smallest giving at most 80 bins
_WIDTHS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)


def attempts(run: PastRun) -> pl.DataFrame:
    """Every attempt: endpoint, seconds from the origin, latency, retried, failed."""
    scan = run.scan(run.requests)
    if scan is None:
        return pl.DataFrame(
            schema={
                "endpoint": pl.String,
                "t": pl.Float64,
                "latency_ms": pl.Float64,
                "retry": pl.Boolean,
                "failed": pl.Boolean,
            }
        )
    started = pl.col("started_at")
    origin = run_start(run)
    base = started.min() if origin is None else pl.lit(origin, dtype=pl.Datetime("us", "UTC"))
    return scan.select(
        "endpoint",
        ((started - base).dt.total_microseconds() / 1e6).alias("t"),
        "latency_ms",
        (pl.col("attempt") > 1).alias("retry"),
        pl.col("error").is_not_null().alias("failed"),
    ).collect()


def run_start(run: PastRun) -> datetime | None:
    """When the run started (its summary's ``started_at``), or None when not known."""
    value = run.summary.get("started_at")
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def value_arrays(run: PastRun, only: Sequence[str] | None = None) -> dict[str, Values]:
    """Every feature and prediction of the run, nulls and non-finite values left out."""
    scan = run.scan(run.offers)
    if scan is None:
        return {}
    names = value_columns(scan.collect_schema(), run.summary.get("endpoints") or {})
    if only is not None:
        names = [n for n in names if n in only]
    table = scan.select(names).collect()
    return {name: finite_values(table.get_column(name)) for name in names}


def per_bin(requests: pl.DataFrame) -> tuple[float, dict[str, pl.DataFrame]]:
    """Per endpoint, per time bin: attempts, retries and errors; and the bin width."""
    span = float(requests.select(pl.col("t").max().fill_null(0.0)).item())
    width = next((w for w in _WIDTHS if span / w <= 80), _WIDTHS[-1])
    binned = (
        requests.group_by("endpoint", (pl.col("t") // width).alias("bin"), maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("retry").sum(), pl.col("failed").sum())
        .sort("bin")
    )
    bins = pl.DataFrame({"bin": np.arange(0, math.floor(span / width) + 1, dtype=np.float64)})
    out = {}
    for (endpoint,), group in binned.group_by("endpoint", maintain_order=True):
        dense = bins.join(group.drop("endpoint"), on="bin", how="left").fill_null(0)
        out[str(endpoint)] = dense.with_columns(pl.col("bin") * width)
    return width, out
