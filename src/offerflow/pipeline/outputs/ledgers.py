"""What one partition of a run did, and the run's figures merged from its partitions.

A run is one or more partitions of its members (one in-process, many on a cluster). Each
partition reports a :class:`PartitionResult`; :func:`merge` adds their ledgers up and combines
their task figures into the run's: counts add up, a task's time span runs from its first start
to its last end over the partitions, its busy time adds up (task-seconds), and its latency
percentiles are taken over the partitions' latency samples, each weighted by how many items it
stands for (one partition's percentiles are its own, unchanged).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from offerflow.engine import MetricsHook

__all__ = ["PartitionResult", "TaskFigures", "merge", "task_figures"]

#: the statuses that need no more work (``Status.OK``, ``Status.NO_TRANSACTIONS``)
_FINAL = ("ok", "no_transactions")

#: latencies a partition hands on per task, at most: enough for p99 within about a percent,
#: small enough to send back from a worker and keep with the partition's result
SAMPLE = 4096


@dataclass(frozen=True, slots=True)
class TaskFigures:
    """One task's figures in one partition: its metrics, when it ran, and a latency sample."""

    metrics: dict[str, Any]
    #: epoch seconds; None when the task never started (or never ended) in this partition
    started_at: float | None
    ended_at: float | None
    #: seconds; a uniform sample of the latencies the percentiles were taken over
    latencies: list[float] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The figures as JSON data (latencies to the microsecond)."""
        return {
            "metrics": self.metrics,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "latencies": [round(latency, 6) for latency in self.latencies],
        }

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> TaskFigures:
        """The figures :meth:`document` wrote."""
        return cls(
            dict(document["metrics"]),
            document["started_at"],
            document["ended_at"],
            [float(latency) for latency in document["latencies"]],
        )


def task_figures(hook: MetricsHook, run_started_at: float) -> dict[str, TaskFigures]:
    """Every task's figures from a finished run's metrics hook (the run started at the epoch
    second ``run_started_at``)."""
    figures = {}
    for name, metrics in hook.snapshot().items():
        sample = hook.latencies(name)
        if len(sample) > SAMPLE:
            sample = sample[:: math.ceil(len(sample) / SAMPLE)]
        figures[name] = TaskFigures(
            metrics=metrics.as_dict(),
            started_at=None if metrics.started_s is None else run_started_at + metrics.started_s,
            ended_at=None if metrics.ended_s is None else run_started_at + metrics.ended_s,
            latencies=sample,
        )
    return figures


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """What one partition of a run did: its ledgers, its offers, its tasks' figures."""

    partition: int
    rows_in: int
    rows_used: int
    rejects_by_reason: dict[str, int]
    members_in: int
    members_by_status: dict[str, int]
    offers_by_type: dict[str, int]
    tasks: dict[str, TaskFigures]
    endpoints: dict[str, dict[str, int]]
    #: epoch seconds
    started_at: float
    finished_at: float
    peak_rss_mb: float

    @property
    def rows_rejected(self) -> int:
        """The partition's rejected rows."""
        return sum(self.rejects_by_reason.values())

    @property
    def done(self) -> bool:
        """Whether every member of the partition is final: a resume has nothing to do in it."""
        return set(self.members_by_status) <= set(_FINAL)

    def document(self) -> dict[str, Any]:
        """The result as JSON data."""
        document = {name: getattr(self, name) for name in self.__dataclass_fields__}
        document["tasks"] = {name: task.document() for name, task in self.tasks.items()}
        return document

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> PartitionResult:
        """The result :meth:`document` wrote."""
        fields = dict(document)
        fields["tasks"] = {name: TaskFigures.of(task) for name, task in fields["tasks"].items()}
        return cls(**fields)


def merge(results: Sequence[PartitionResult]) -> dict[str, Any]:
    """The run's ledger, offers, tasks and endpoints, from its partitions' results."""
    by_reason = _sum(r.rejects_by_reason for r in results)
    by_status = _sum(r.members_by_status for r in results)
    members_in = sum(r.members_in for r in results)
    names = list(dict.fromkeys(name for r in results for name in r.tasks))
    origin = min((r.started_at for r in results), default=0.0)
    return {
        "ledger": {
            "rows_in": sum(r.rows_in for r in results),
            "rows_used": sum(r.rows_used for r in results),
            "rows_rejected": sum(by_reason.values()),
            "rejects_by_reason": by_reason,
            "members_in": members_in,
            "members_by_status": by_status,
            "balanced": sum(by_status.values()) == members_in,
        },
        "offers_by_type": _sum(r.offers_by_type for r in results),
        "tasks": {
            name: _merge_task(name, [r.tasks[name] for r in results if name in r.tasks], origin)
            for name in names
        },
        "endpoints": {
            name: _sum(r.endpoints[name] for r in results if name in r.endpoints)
            for name in dict.fromkeys(name for r in results for name in r.endpoints)
        },
    }


def _sum(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The counts added up, keys sorted."""
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(sorted(total.items()))


def _merge_task(name: str, parts: Sequence[TaskFigures], origin: float) -> dict[str, Any]:
    if len(parts) == 1:
        return dict(parts[0].metrics)
    first = parts[0].metrics
    started = [p.started_at for p in parts if p.started_at is not None]
    ended = [p.ended_at for p in parts if p.ended_at is not None]
    begin = min(started) if started else None
    end = max(ended) if ended and len(ended) == len(parts) else None
    wall = end - begin if begin is not None and end is not None else 0.0
    items_out = sum(int(p.metrics["items_out"]) for p in parts)
    ordered = _weighted(parts)
    return {
        "task": name,
        "kind": first["kind"],
        "items_in": sum(int(p.metrics["items_in"]) for p in parts),
        "items_out": items_out,
        "items_failed": sum(int(p.metrics["items_failed"]) for p in parts),
        "wall_s": wall,
        "busy_s": sum(float(p.metrics["busy_s"]) for p in parts),
        "throughput": items_out / wall if wall > 0 else 0.0,
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p90_ms": _percentile(ordered, 0.90) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "max_ms": max(float(p.metrics["max_ms"]) for p in parts),
        "started_s": None if begin is None else begin - origin,
        "ended_s": None if end is None else end - origin,
    }


def _weighted(parts: Sequence[TaskFigures]) -> list[tuple[float, float]]:
    """Every sampled latency with the share of the task's items it stands for, sorted."""
    weighted = []
    for part in parts:
        items = int(part.metrics["items_out"]) + int(part.metrics["items_failed"])
        if part.latencies and items:
            weight = items / len(part.latencies)
            weighted += [(latency, weight) for latency in part.latencies]
    return sorted(weighted)


def _percentile(ordered: Sequence[tuple[float, float]], q: float) -> float:
    """The nearest-rank percentile of weighted values, sorted by value."""
    if not ordered:
        return 0.0
    target = q * sum(weight for _, weight in ordered)
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= target:
            return value
    return ordered[-1][0]
