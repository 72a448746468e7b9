"""The metrics hook: per-task counts, times and latency percentiles of a run."""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from time import perf_counter

from offerflow.engine.hooks import Hook
from offerflow.engine.tasks import TaskKind

#: latencies kept per task for its percentiles: all of them up to this many items, a uniform
#: random sample of this many beyond (percentiles within a fraction of a percent of the exact
#: ones; the maximum is always exact)
SAMPLE = 65_536


@dataclass(frozen=True, slots=True)
class TaskMetrics:
    """What one task did in a run: items, times (seconds) and latency percentiles (ms).

    ``items_in`` counts the items the task started on, so ``items_in == items_out +
    items_failed`` once it is done (a step counts its one call as one item). ``busy_s`` is
    the time with at least one item in flight; ``throughput`` is ``items_out / wall_s``. The
    latency percentiles (nearest rank) cover done and failed items alike; beyond
    :data:`SAMPLE` items of a task they are those of a uniform sample of its latencies.
    ``started_s`` and ``ended_s`` place the task on the run's timeline.
    """

    task: str
    kind: TaskKind
    items_in: int
    items_out: int
    items_failed: int
    wall_s: float
    busy_s: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: when the task started and ended, in seconds since the run started (None: not yet)
    started_s: float | None = None
    ended_s: float | None = None

    def as_dict(self) -> dict[str, float | int | str]:
        """Return the metrics as a flat dict, e.g. for JSON."""
        return asdict(self)


class _Tally:
    """The running counts of one task."""

    __slots__ = (
        "busy",
        "busy_since",
        "ended",
        "in_flight",
        "items_failed",
        "items_in",
        "items_out",
        "kind",
        "latencies",
        "longest",
        "ordered",
        "sampled",
        "started",
    )

    def __init__(self, kind: TaskKind) -> None:
        self.kind: TaskKind = kind
        self.started: float | None = None
        self.ended: float | None = None
        self.items_in = 0
        self.items_out = 0
        self.items_failed = 0
        self.in_flight = 0
        self.busy_since = 0.0
        self.busy = 0.0
        # A uniform sample of the latencies (reservoir): every one of a run of up to SAMPLE
        # items, a fixed-size random sample of a longer one, so that memory does not grow with
        # the run. A flat array of doubles: 8 bytes per latency, where a list costs 32.
        self.latencies = array("d")
        self.sampled = 0  # latencies offered to the sample
        self.longest = 0.0
        # the sample sorted, with ``sampled`` when it was: a run's end reads it twice, and
        # sorting 65,536 latencies takes ~30 ms
        self.ordered: tuple[int, list[float]] = (0, [])

    def sorted_sample(self) -> list[float]:
        """The sample in ascending order (sorted again only when a latency came since)."""
        sampled, ordered = self.ordered
        if sampled != self.sampled:
            ordered = sorted(self.latencies)
            self.ordered = (self.sampled, ordered)
        return ordered

    def record(self, latency: float, rng: random.Random) -> None:
        """Offer one item's latency to the sample (Vitter's algorithm R)."""
        self.sampled += 1
        if latency > self.longest:
            self.longest = latency
        if len(self.latencies) < SAMPLE:
            self.latencies.append(latency)
            return
        slot = rng.randrange(self.sampled)
        if slot < SAMPLE:
            self.latencies[slot] = latency


def _percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


class MetricsHook(Hook):
    """Measures every task of a run; ``snapshot()`` may be called during or after the run.

    Pass it to ``Workflow.run(hooks=[...])``; the run's ``RunResult.metrics`` is its final
    snapshot. ``clock`` is a test seam (seconds, monotonic). A hook instance measures one run
    at a time; a new run starts it afresh.
    """

    def __init__(self, *, clock: Callable[[], float] = perf_counter) -> None:
        self._clock = clock
        self._rng = random.Random(0)  # which latencies a long run samples: reproducible
        self._kinds: dict[str, TaskKind] = {}
        self._tallies: dict[str, _Tally] = {}
        self._run_started = 0.0

    def bind(self, kinds: Mapping[str, TaskKind]) -> None:
        """Learn the kind of every task; the engine calls this before ``on_run_start``."""
        self._kinds = dict(kinds)

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        """Start counting afresh for ``tasks``."""
        self._tallies = {task: _Tally(self._kinds.get(task, "step")) for task in tasks}
        self._run_started = self._clock()

    def on_task_start(self, *, task: str) -> None:
        """Start the task's wall clock."""
        self._tallies[task].started = self._clock()

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        """Stop the task's wall clock and close any busy period left open by a failure."""
        tally = self._tallies[task]
        tally.ended = now = self._clock()
        if tally.in_flight:
            tally.busy += now - tally.busy_since
            tally.in_flight = 0

    def on_item_start(self, *, task: str, key: Hashable) -> None:
        """Count an item in."""
        tally = self._tallies[task]
        tally.items_in += 1
        if not tally.in_flight:
            tally.busy_since = self._clock()
        tally.in_flight += 1

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        """Count an item out and record its latency."""
        tally = self._tallies[task]
        tally.items_out += 1
        tally.record(latency, self._rng)
        self._leave(tally)

    def on_item_failed(
        self, *, task: str, key: Hashable, error: BaseException, latency: float
    ) -> None:
        """Count a failed item and record its latency."""
        tally = self._tallies[task]
        tally.items_failed += 1
        tally.record(latency, self._rng)
        self._leave(tally)

    def _leave(self, tally: _Tally) -> None:
        tally.in_flight -= 1
        if not tally.in_flight:
            tally.busy += self._clock() - tally.busy_since

    def snapshot(self) -> dict[str, TaskMetrics]:
        """Return the metrics of every task so far; a running task's times count up to now."""
        now = self._clock()
        return {task: self._measure(task, tally, now) for task, tally in self._tallies.items()}

    def latencies(self, task: str) -> list[float]:
        """The latencies (seconds) the task's percentiles are taken from: all of them, or a
        uniform sample of :data:`SAMPLE` beyond that many items; e.g. to merge runs."""
        return list(self._tallies[task].latencies)

    def _measure(self, task: str, tally: _Tally, now: float) -> TaskMetrics:
        if tally.started is None:
            wall = 0.0
        else:
            wall = (now if tally.ended is None else tally.ended) - tally.started
        busy = tally.busy + (now - tally.busy_since if tally.in_flight else 0.0)
        ordered = tally.sorted_sample()
        return TaskMetrics(
            task=task,
            kind=tally.kind,
            items_in=tally.items_in,
            items_out=tally.items_out,
            items_failed=tally.items_failed,
            wall_s=wall,
            busy_s=busy,
            throughput=tally.items_out / wall if wall > 0 else 0.0,
            p50_ms=_percentile(ordered, 0.50) * 1000,
            p90_ms=_percentile(ordered, 0.90) * 1000,
            p99_ms=_percentile(ordered, 0.99) * 1000,
            max_ms=tally.longest * 1000,
            started_s=None if tally.started is None else tally.started - self._run_started,
            ended_s=None if tally.ended is None else tally.ended - self._run_started,
        )
