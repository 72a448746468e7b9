"""Drift between two runs: how far a run's features, predictions, offers and latencies moved.

Every figure compares a run (B) with a baseline run (A):

- a feature or prediction: its population stability index over 10 quantile bins of A, and the
  relative shift of its median and 90th percentile;
- an offer type: the change of its share of the offers;
- an endpoint: its p50 and p99 attempt latency (``requests.parquet``), and the p99 ratio;
- the ledgers: rows and members in, used, rejected, by status (reported, never judged).

**PSI.** The bins are A's deciles: edges at A's 10th, 20th, …, 90th percentiles (linear
interpolation), repeated edges merged (a feature with many equal values gets fewer bins), open
at both ends, each bin ``(lower, upper]``. With ``a_i`` and ``b_i`` the shares of A's and B's
values in bin ``i`` (nulls and non-finite values left out), each raised to at least
``EPSILON = 1e-4`` so that an empty bin stays finite::

    PSI = Σ (b_i - a_i) · ln(b_i / a_i)

Below 0.1 is usually read as no shift, above 0.25 as a large one.

A figure has drifted when it is past its limit in the partner's ``drift`` config
(:class:`~offerflow.config.DriftConfig`); a limit of None is not judged. The figures are
gathered in a :class:`~offerflow.pipeline.outputs.comparison.Comparison`, which shows them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import ValidationError

from offerflow.config import DriftConfig, load_config
from offerflow.errors import OfferflowError, UsageError
from offerflow.pipeline.outputs.comparison import (
    ColumnDrift,
    Comparison,
    LatencyChange,
    LedgerChange,
    OfferShareChange,
)
from offerflow.pipeline.outputs.history import PastRun

__all__ = [
    "EPSILON",
    "Values",
    "compare_runs",
    "drift_limits",
    "finite_values",
    "population_stability",
    "value_columns",
]

log = logging.getLogger(__name__)

#: the least share a PSI bin is given, so that an empty bin adds a large but finite term
EPSILON = 1e-4
#: the quantiles of the baseline that bound the PSI bins
_DECILES = tuple(i / 10 for i in range(1, 10))
#: columns of offers.parquet that are neither features nor predictions (``attempts``: older runs')
_NOT_VALUES = frozenset({"member_id", "offer", "status", "error", "attempts"})

#: a column's values, as the figures are computed from them
Values = npt.NDArray[np.float64]


def population_stability(baseline: Values, values: Values) -> float:
    """The PSI of ``values`` against ``baseline``, over the baseline's deciles (module doc)."""
    if baseline.size == 0 or values.size == 0:
        return 0.0
    edges = np.unique(np.quantile(baseline, _DECILES))
    bins = len(edges) + 1
    a = np.bincount(np.searchsorted(edges, baseline, side="left"), minlength=bins)
    b = np.bincount(np.searchsorted(edges, values, side="left"), minlength=bins)
    share_a = np.maximum(a / baseline.size, EPSILON)
    share_b = np.maximum(b / values.size, EPSILON)
    return float(np.sum((share_b - share_a) * np.log(share_b / share_a)))


def value_columns(schema: Mapping[str, pl.DataType], endpoints: Iterable[str]) -> list[str]:
    """The features and predictions of an offers table: numeric, not latencies or attempts."""
    per_endpoint = {f"{name}{suffix}" for name in endpoints for suffix in ("_ms", "_attempts")}
    return [
        name
        for name, dtype in schema.items()
        if dtype.is_numeric() and name not in _NOT_VALUES and name not in per_endpoint
    ]


def finite_values(column: pl.Series) -> Values:
    """A column's values as floats, nulls and non-finite values left out."""
    values: Values = column.drop_nulls().cast(pl.Float64).to_numpy()
    finite: Values = values[np.isfinite(values)]
    return finite


def drift_limits(run: PastRun) -> tuple[DriftConfig, str]:
    """The drift limits of a run's config, and where they were found.

    From the config ``run.json`` holds, when it holds one; else from the config file it names,
    as that file is now; else the defaults.
    """
    config = run.manifest.get("config")
    where = run.dir / "run.json"
    if isinstance(config, Mapping):
        try:
            return DriftConfig.model_validate(config.get("drift") or {}), f"{where}"
        except ValidationError as exc:
            raise UsageError(f"{where}: key 'config.drift': {exc}") from exc
    path = run.manifest.get("config_path")
    if isinstance(path, str):
        try:
            return load_config(Path(path)).drift, path
        except OfferflowError as exc:
            log.warning("drift limits: the defaults, %s cannot be loaded: %s", path, exc)
    return DriftConfig(), "defaults"


def compare_runs(
    baseline: PastRun, run: PastRun, limits: DriftConfig | None = None, limits_from: str = ""
) -> Comparison:
    """Compare ``run`` with ``baseline`` under ``limits`` (default: :func:`drift_limits`)."""
    if limits is None:
        limits, limits_from = drift_limits(run)
    columns, unmatched = _columns(baseline, run, limits)
    return Comparison(
        baseline=baseline,
        run=run,
        limits=limits,
        limits_from=limits_from,
        columns=columns,
        offers=_offers(baseline, run, limits),
        latency=_latency(baseline, run, limits),
        ledger=_ledger(baseline, run),
        unmatched=unmatched,
    )


def _columns(
    a: PastRun, b: PastRun, limits: DriftConfig
) -> tuple[tuple[ColumnDrift, ...], tuple[str, ...]]:
    scans = []
    for past in (a, b):
        scan = past.scan(past.offers)
        if scan is None:
            raise UsageError(f"{past.offers}: no offers table to compare")
        scans.append(scan)
    names = [
        value_columns(scan.collect_schema(), _endpoints(run))
        for scan, run in zip(scans, (a, b), strict=True)
    ]
    shared = [n for n in names[0] if n in names[1]]
    tables = [scan.select(shared).collect() for scan in scans]
    results = []
    for name in shared:
        va, vb = (finite_values(table.get_column(name)) for table in tables)
        median_a, p90_a = _quantiles(va)
        median_b, p90_b = _quantiles(vb)
        psi = population_stability(va, vb)
        median_shift = _relative(median_a, median_b)
        p90_shift = _relative(p90_a, p90_b)
        drifted_by = tuple(
            figure
            for figure, value, limit in (
                ("psi", psi, limits.psi),
                ("median_shift", median_shift, limits.median_shift),
                ("p90_shift", p90_shift, limits.p90_shift),
            )
            if limit is not None and value is not None and abs(value) > limit
        )
        kind = "prediction" if name.endswith("_prediction") else "feature"
        results.append(
            ColumnDrift(
                name,
                kind,
                psi,
                median_a,
                median_b,
                median_shift,
                p90_a,
                p90_b,
                p90_shift,
                drifted_by,
            )
        )
    unmatched = tuple(sorted(set(names[0]) ^ set(names[1])))
    return tuple(results), unmatched


def _offers(a: PastRun, b: PastRun, limits: DriftConfig) -> tuple[OfferShareChange, ...]:
    shares = [_offer_shares(run) for run in (a, b)]
    offers = sorted(set(shares[0]) | set(shares[1]))
    changes = []
    for offer in offers:
        share_a, share_b = shares[0].get(offer, 0.0), shares[1].get(offer, 0.0)
        change = share_b - share_a
        changes.append(
            OfferShareChange(offer, share_a, share_b, change, abs(change) > limits.offer_share)
        )
    return tuple(changes)


def _offer_shares(run: PastRun) -> dict[str, float]:
    scan = run.scan(run.offers)
    if scan is None or "offer" not in scan.collect_schema():
        return {}
    counts = scan.drop_nulls("offer").group_by("offer").len().collect()
    total = counts.get_column("len").sum()
    return {offer: n / total for offer, n in counts.iter_rows()} if total else {}


def _latency(a: PastRun, b: PastRun, limits: DriftConfig) -> tuple[LatencyChange, ...]:
    figures = [_latencies(run) for run in (a, b)]
    endpoints = [*figures[0], *(e for e in figures[1] if e not in figures[0])]
    changes = []
    for endpoint in endpoints:
        p50_a, p99_a = figures[0].get(endpoint, (None, None))
        p50_b, p99_b = figures[1].get(endpoint, (None, None))
        ratio = p99_b / p99_a if p99_a and p99_b is not None else None
        limit = limits.latency_p99_ratio
        drifted = limit is not None and ratio is not None and ratio > limit
        changes.append(LatencyChange(endpoint, p50_a, p50_b, p99_a, p99_b, ratio, drifted))
    return tuple(changes)


def _latencies(run: PastRun) -> dict[str, tuple[float, float]]:
    """Per endpoint, in the order the summary lists them: p50 and p99 attempt latency."""
    scan = run.scan(run.requests)
    if scan is None:
        return {}
    table = (
        scan.group_by("endpoint")
        .agg(
            pl.col("latency_ms").quantile(0.5, "linear").alias("p50"),
            pl.col("latency_ms").quantile(0.99, "linear").alias("p99"),
        )
        .collect()
    )
    found = {endpoint: (p50, p99) for endpoint, p50, p99 in table.iter_rows()}
    order = [*_endpoints(run), *sorted(found)]
    return {e: found[e] for e in dict.fromkeys(order) if e in found}


def _ledger(a: PastRun, b: PastRun) -> tuple[LedgerChange, ...]:
    def figures(run: PastRun) -> dict[str, int]:
        ledger = run.ledger
        keys = ("rows_in", "rows_used", "rows_rejected", "members_in")
        flat = {k: ledger[k] for k in keys if isinstance(ledger.get(k), int)}
        by_status = ledger.get("members_by_status") or {}
        flat.update({f"members {status}": n for status, n in by_status.items()})
        return flat

    fa, fb = (figures(run) if run.ledger else {} for run in (a, b))
    names = [*fa, *(n for n in fb if n not in fa)]
    return tuple(
        LedgerChange(
            name,
            fa.get(name),
            fb.get(name),
            None if name not in fa or name not in fb else fb[name] - fa[name],
        )
        for name in names
    )


def _endpoints(run: PastRun) -> list[str]:
    endpoints = run.summary.get("endpoints") or {}
    return list(endpoints)


def _quantiles(values: Values) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    median, p90 = np.quantile(values, (0.5, 0.9))
    return float(median), float(p90)


def _relative(a: float | None, b: float | None) -> float | None:
    """``(b - a) / |a|``; infinite when only ``a`` is 0, None when either is missing."""
    if a is None or b is None:
        return None
    if a == 0:
        return 0.0 if b == 0 else math.copysign(math.inf, b)
    return (b - a) / abs(a)
