"""Drift between two runs: PSI, quantile shifts, offer shares, latency, and the limits."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from offerflow.config import DEFAULT_CONFIG, DriftConfig
from offerflow.errors import UsageError
from offerflow.pipeline import compare_runs, read_run
from offerflow.pipeline.outputs.drift import (
    EPSILON,
    drift_limits,
    population_stability,
    value_columns,
)
from tests.pipeline.outputs.run_dirs import write_run

SUMMARY = {
    "run_id": "r",
    "ledger": {
        "rows_in": 10,
        "rows_used": 9,
        "rows_rejected": 1,
        "members_in": 4,
        "members_by_status": {"ok": 4},
    },
    "endpoints": {"ats": {}, "offer": {}},
}


def _values(*values: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(values, dtype=np.float64)


def test_psi_of_a_sample_against_itself_is_0() -> None:
    sample = np.random.default_rng(1).normal(size=1000)
    assert population_stability(sample, sample) == 0.0


def test_psi_sums_over_the_baselines_deciles_as_documented() -> None:
    # baseline 1..10: deciles 1.9, 2.8, …, 9.1 cut it into bins of one value each
    baseline = _values(*range(1, 11))
    values = _values(1, 1, 1, 1, 1, 10, 10, 10, 10, 10)
    shares_a = np.full(10, 0.1)
    shares_b = np.array([0.5, *[EPSILON] * 8, 0.5])
    expected = float(np.sum((shares_b - shares_a) * np.log(shares_b / shares_a)))
    assert population_stability(baseline, values) == pytest.approx(expected)


def test_psi_bins_are_closed_above() -> None:
    # the baseline's deciles are all 0 or 1: a value equal to an edge falls in the bin below it
    baseline = _values(*[0] * 50, *[1] * 50)
    assert population_stability(baseline, _values(0, 1)) == pytest.approx(0.0)


def test_an_empty_bin_keeps_the_psi_finite() -> None:
    psi = population_stability(_values(*range(100)), _values(*[1000] * 100))
    assert math.isfinite(psi)
    assert psi > 5


def test_the_values_of_an_offers_table_are_its_features_and_predictions() -> None:
    schema = {
        "member_id": pl.String(),
        "AVG": pl.Float64(),
        "DAYS": pl.Int64(),
        "ats_prediction": pl.Float64(),
        "offer": pl.String(),
        "status": pl.String(),
        "error": pl.String(),
        "ats_ms": pl.Float64(),
        "ats_attempts": pl.Int32(),
    }
    assert value_columns(schema, ["ats"]) == ["AVG", "DAYS", "ats_prediction"]


def test_the_attempts_column_of_a_run_written_before_per_endpoint_attempts_is_no_value() -> None:
    schema = {"member_id": pl.String(), "AVG": pl.Float64(), "attempts": pl.Int32()}
    assert value_columns(schema, ["ats"]) == ["AVG"]


def _pair(
    tmp_path: Path,
    a: dict[str, list[Any]],
    b: dict[str, list[Any]],
    latencies: tuple[dict[str, list[float]], dict[str, list[float]]] | None = None,
    manifest: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    runs = []
    for name, offers, latency in zip("ab", (a, b), latencies or (None, None), strict=True):
        run_dir = write_run(
            tmp_path / name,
            summary={**SUMMARY, "run_id": name},
            manifest=manifest if name == "b" else None,
            offers=offers,
            latencies=latency,
        )
        runs.append(read_run(run_dir))
    return runs[0], runs[1]


def test_an_offer_share_that_moved_past_the_limit_drifts(tmp_path: Path) -> None:
    a, b = _pair(
        tmp_path,
        {"offer": ["O1"] * 9 + ["O2"]},
        {"offer": ["O1"] * 8 + ["O2", None]},  # O2: 10% → 11.1%, O1: 90% → 88.9%
    )
    loose = compare_runs(a, b, DriftConfig(offer_share=0.05), "test")
    assert [(o.offer, o.drifted) for o in loose.offers] == [("O1", False), ("O2", False)]
    assert loose.offers[1].share_b == pytest.approx(1 / 9)
    tight = compare_runs(a, b, DriftConfig(offer_share=0.01), "test")
    assert tight.drifted == ("offer_share O1", "offer_share O2")


@pytest.mark.parametrize(
    ("a", "b", "median_shift", "drifted_by"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0, ()),
        ([1.0, 2.0, 3.0], [1.0, 3.0, 3.0], 0.5, ("median_shift",)),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0.0, ()),
        ([0.0, 0.0, 0.0], [0.0, 1.0, 1.0], math.inf, ("median_shift",)),
    ],
)
def test_median_shift_is_relative_to_the_baseline(
    tmp_path: Path, a: list[float], b: list[float], median_shift: float, drifted_by: tuple[str, ...]
) -> None:
    limits = DriftConfig(psi=100, median_shift=0.25)
    comparison = compare_runs(*_pair(tmp_path, {"X": a}, {"X": b}), limits, "test")
    (column,) = comparison.columns
    assert column.median_shift == median_shift
    assert column.drifted_by == drifted_by


def test_p99_latency_is_judged_only_with_a_limit(tmp_path: Path) -> None:
    fast = {"ats": [10.0] * 100, "offer": [10.0] * 100}
    slow = {"ats": [10.0] * 90 + [100.0] * 10, "offer": [10.0] * 100}
    a, b = _pair(tmp_path, {"X": [1.0]}, {"X": [1.0]}, (fast, slow))
    unjudged = compare_runs(a, b, DriftConfig(), "test")
    assert [e.endpoint for e in unjudged.latency] == ["ats", "offer"]
    assert unjudged.latency[0].p99_ratio == pytest.approx(10.0)
    assert unjudged.drifted == ()
    judged = compare_runs(a, b, DriftConfig(latency_p99_ratio=2), "test")
    assert judged.drifted == ("latency_p99_ratio ats",)


def test_the_ledgers_are_compared_figure_by_figure(tmp_path: Path) -> None:
    comparison = compare_runs(*_pair(tmp_path, {"X": [1.0]}, {"X": [1.0]}))
    assert [(g.figure, g.a, g.b, g.change, g.drifted) for g in comparison.ledger] == [
        ("rows_in", 10, 10, 0, False),
        ("rows_used", 9, 9, 0, False),
        ("rows_rejected", 1, 1, 0, False),
        ("members_in", 4, 4, 0, False),
        ("members ok", 4, 4, 0, False),
    ]


def test_the_json_figures_are_strict_json_each_with_drifted(tmp_path: Path) -> None:
    limits = DriftConfig(median_shift=0.1)
    a, b = _pair(tmp_path, {"X": [0.0, 0.0], "Y": [1.0, 2.0]}, {"X": [1.0, 1.0], "Z": [1.0, 2.0]})
    figures = json.loads(json.dumps(compare_runs(a, b, limits, "test").as_dict(), allow_nan=False))
    (x,) = figures["columns"]
    assert (x["name"], x["median_shift"], x["drifted"]) == ("X", None, True)  # infinite: null
    assert figures["unmatched_columns"] == ["Y", "Z"]
    groups = ("columns", "offers", "latency", "ledger")
    assert all("drifted" in figure for group in groups for figure in figures[group])


def test_limits_come_from_the_config_in_run_json(tmp_path: Path) -> None:
    manifest = {"config": {"drift": {"psi": 0.5}}, "config_path": str(DEFAULT_CONFIG)}
    run = read_run(write_run(tmp_path / "r", manifest=manifest))
    assert drift_limits(run) == (DriftConfig(psi=0.5), str(tmp_path / "r" / "run.json"))


def test_limits_come_from_the_config_file_run_json_names(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(DEFAULT_CONFIG.read_text() + "drift: {offer_share: 0.3}\n")
    (tmp_path / "default_members.csv").touch()
    run = read_run(write_run(tmp_path / "r", manifest={"config_path": str(config)}))
    assert drift_limits(run) == (DriftConfig(offer_share=0.3), str(config))


@pytest.mark.parametrize("manifest", [{}, {"config_path": "/nowhere/p.yaml"}])
def test_limits_fall_back_to_the_defaults(tmp_path: Path, manifest: dict[str, str]) -> None:
    run = read_run(write_run(tmp_path / "r", summary={}, manifest=manifest))
    assert drift_limits(run) == (DriftConfig(), "defaults")


def test_a_bad_drift_section_in_run_json_is_named(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", manifest={"config": {"drift": {"pis": 1}}}))
    with pytest.raises(UsageError, match=r"run\.json: key 'config\.drift'"):
        drift_limits(run)
