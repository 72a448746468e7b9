"""A run's figures merged from its partitions: ledgers add up, percentiles weigh items."""

from __future__ import annotations

from typing import Any

import pytest

from offerflow.pipeline.outputs.ledgers import PartitionResult, TaskFigures, merge


def _metrics(items: int, *, busy: float, p50: float, max_ms: float) -> dict[str, Any]:
    return {
        "task": "ats",
        "kind": "stream",
        "items_in": items,
        "items_out": items,
        "items_failed": 0,
        "wall_s": 1.0,
        "busy_s": busy,
        "throughput": float(items),
        "p50_ms": p50,
        "p90_ms": p50,
        "p99_ms": p50,
        "max_ms": max_ms,
        "started_s": 0.0,
        "ended_s": 1.0,
    }


def _result(
    partition: int, *, started: float, ended: float, latencies: list[float], items: int
) -> PartitionResult:
    figures = TaskFigures(
        _metrics(
            items, busy=ended - started, p50=latencies[0] * 1000, max_ms=max(latencies) * 1000
        ),
        started_at=started,
        ended_at=ended,
        latencies=latencies,
    )
    return PartitionResult(
        partition=partition,
        rows_in=10 + partition,
        rows_used=8 + partition,
        rejects_by_reason={"bad_timestamp": 1, f"reason_{partition}": 1},
        members_in=5,
        members_by_status={"ok": 4, "no_transactions": 1},
        offers_by_type={"OFFER_1": 3, "OFFER_2": 1},
        tasks={"ats": figures},
        endpoints={"ats": {"requests": 4, "errors": 0, "retries": partition}},
        started_at=started,
        finished_at=ended,
        peak_rss_mb=100.0,
    )


def test_one_partition_is_the_run_unchanged() -> None:
    only = _result(0, started=100.0, ended=101.5, latencies=[0.01, 0.02], items=4)
    merged = merge([only])
    assert merged["tasks"]["ats"] == only.tasks["ats"].metrics
    assert merged["ledger"] == {
        "rows_in": 10,
        "rows_used": 8,
        "rows_rejected": 2,
        "rejects_by_reason": {"bad_timestamp": 1, "reason_0": 1},
        "members_in": 5,
        "members_by_status": {"no_transactions": 1, "ok": 4},
        "balanced": True,
    }


def test_partitions_add_up_and_a_task_spans_from_its_first_start_to_its_last_end() -> None:
    first = _result(0, started=100.0, ended=102.0, latencies=[0.01], items=4)
    second = _result(1, started=101.0, ended=104.0, latencies=[0.03], items=4)
    merged = merge([first, second])
    ledger = merged["ledger"]
    assert (ledger["rows_in"], ledger["rows_used"], ledger["rows_rejected"]) == (21, 17, 4)
    assert ledger["rejects_by_reason"] == {"bad_timestamp": 2, "reason_0": 1, "reason_1": 1}
    assert (ledger["members_in"], ledger["members_by_status"]) == (
        10,
        {"no_transactions": 2, "ok": 8},
    )
    assert merged["offers_by_type"] == {"OFFER_1": 6, "OFFER_2": 2}
    assert merged["endpoints"]["ats"] == {"requests": 8, "errors": 0, "retries": 1}
    ats = merged["tasks"]["ats"]
    assert (ats["items_out"], ats["wall_s"], ats["busy_s"]) == (8, 4.0, 5.0)
    assert (ats["started_s"], ats["ended_s"], ats["throughput"]) == (0.0, 4.0, 2.0)
    assert ats["max_ms"] == pytest.approx(30.0)


def test_a_partitions_sample_weighs_as_many_items_as_it_stands_for() -> None:
    # 90 items answered in 10 ms (a sample of 3), 10 items in 50 ms (a sample of 10)
    fast = _result(0, started=0.0, ended=1.0, latencies=[0.01] * 3, items=90)
    slow = _result(1, started=0.0, ended=1.0, latencies=[0.05] * 10, items=10)
    ats = merge([fast, slow])["tasks"]["ats"]
    assert ats["p50_ms"] == pytest.approx(10.0)  # an unweighted sample would put it at 50
    assert ats["p90_ms"] == pytest.approx(10.0)
    assert ats["p99_ms"] == pytest.approx(50.0)
