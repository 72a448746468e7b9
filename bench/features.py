"""The feature stage at scale: offerflow's features against the same aggregates in bare polars.

Both run in this process on the frame ``read_transactions`` parsed (its time is measured
separately), alternated, and their medians compared. The bare version is what one would write
by hand for the eight default features: a lazy stable sort by timestamp, then one
``group_by("member_id").agg(...)``; no registry, no checks, no final sort by member_id.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from polars.testing import assert_frame_equal

from bench.workload import AS_OF, WORK, input_file
from offerflow.pipeline import compute_features, parse_as_of, read_transactions

__all__ = ["FeatureStage", "bare_features", "measure_features"]

T = TypeVar("T")

#: rows per member the generator makes on average (10% id-only rows, 90% ~4.75 rows)
ROWS_PER_MEMBER = 4.4


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and CPU seconds of repeated calls (CPU: this process, all polars threads)."""

    wall_s: list[float]
    cpu_s: list[float]

    @property
    def median_s(self) -> float:
        """The median wall time."""
        return statistics.median(self.wall_s)

    def as_dict(self) -> dict[str, Any]:
        """For results.json."""
        return {
            "median_s": round(self.median_s, 4),
            "wall_s": [round(t, 4) for t in self.wall_s],
            "cpu_s": [round(t, 4) for t in self.cpu_s],
        }


@dataclass(frozen=True, slots=True)
class FeatureStage:
    """The figures of the feature stage."""

    members: int
    rows_in: int
    rows_used: int
    read: Timing
    offerflow: Timing
    bare: Timing
    #: whether both computed the same table (up to row order and float rounding)
    agree: bool

    @property
    def ratio(self) -> float:
        """offerflow's median ÷ bare polars' median."""
        return self.offerflow.median_s / self.bare.median_s

    def as_dict(self) -> dict[str, Any]:
        """For results.json."""
        return {
            "members": self.members,
            "rows_in": self.rows_in,
            "rows_used": self.rows_used,
            "read": self.read.as_dict(),
            "compute_features": self.offerflow.as_dict(),
            "bare_polars": self.bare.as_dict(),
            "ratio": round(self.ratio, 4),
            "agree": self.agree,
        }


def bare_features(transactions: pl.DataFrame, as_of_date: date) -> pl.DataFrame:
    """The eight default features in one lazy sort + group_by, written out by hand."""
    points, revenue, kind = pl.col("points"), pl.col("revenue"), pl.col("type")
    n = pl.len()
    return (
        transactions.lazy()
        .sort("ts", maintain_order=True)
        .group_by("member_id")
        .agg(
            (points.sum() / n).alias("AVG_POINTS_BOUGHT"),
            (revenue.sum() / n).alias("AVG_REVENUE_USD"),
            points.tail(3).mean().alias("LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT"),
            revenue.tail(3).mean().alias("LAST_3_TRANSACTIONS_AVG_REVENUE_USD"),
            ((kind == "buy").sum() / n).alias("PCT_BUY_TRANSACTIONS"),
            ((kind == "gift").sum() / n).alias("PCT_GIFT_TRANSACTIONS"),
            ((kind == "redeem").sum() / n).alias("PCT_REDEEM_TRANSACTIONS"),
            (pl.lit(as_of_date) - pl.col("ts").max().dt.date())
            .dt.total_days()
            .alias("DAYS_SINCE_LAST_TRANSACTION"),
        )
        .collect()
    )


def measure_features(
    rows: int,
    *,
    seed: int,
    repeats: int = 3,
    work: Path = WORK,
    progress: Callable[[str], None] = lambda _: None,
) -> FeatureStage:
    """Time reading ~``rows`` generated rows, then offerflow's features against bare polars."""
    members = max(1, round(rows / ROWS_PER_MEMBER))
    path = input_file(members, seed=seed, work=work)
    as_of = parse_as_of(AS_OF)

    read_wall: list[float] = []
    read_cpu: list[float] = []
    for _ in range(repeats):
        result, wall, cpu = _timed(lambda: read_transactions(path, as_of=as_of))
        read_wall.append(wall)
        read_cpu.append(cpu)
        del result
    parsed = read_transactions(path, as_of=as_of)
    frame = parsed.transactions
    progress(f"features: read {parsed.rows_in} rows in {statistics.median(read_wall):.2f} s")

    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    ours_table = bare_table = None
    for _ in range(repeats):  # alternated, so that drift hits both alike
        ours_table, wall, cpu = _timed(lambda: compute_features(frame, as_of=as_of))
        ours.append((wall, cpu))
        bare_table, wall, cpu = _timed(lambda: bare_features(frame, as_of.date()))
        bare.append((wall, cpu))
    assert ours_table is not None
    assert bare_table is not None
    stage = FeatureStage(
        members=members,
        rows_in=parsed.rows_in,
        rows_used=parsed.rows_used,
        read=Timing(read_wall, read_cpu),
        offerflow=Timing([w for w, _ in ours], [c for _, c in ours]),
        bare=Timing([w for w, _ in bare], [c for _, c in bare]),
        agree=_agree(ours_table, bare_table),
    )
    progress(
        f"features: offerflow {stage.offerflow.median_s:.3f} s, "
        f"bare polars {stage.bare.median_s:.3f} s, ratio {stage.ratio:.2f}"
    )
    return stage


def _timed(call: Callable[[], T]) -> tuple[T, float, float]:
    """Call once after a collection; returns the result, wall and CPU seconds."""
    gc.collect()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    result = call()
    wall = time.perf_counter() - wall0
    return result, wall, time.process_time() - cpu0


def _agree(ours: pl.DataFrame, bare: pl.DataFrame) -> bool:
    try:
        assert_frame_equal(
            ours, bare.sort("member_id"), check_exact=False, rel_tol=1e-12, abs_tol=0.0
        )
    except AssertionError:
        return False
    return True
