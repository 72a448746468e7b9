"""MetricsHook: per-task counts, busy and wall time, and latency percentiles."""

from __future__ import annotations

import pytest

from offerflow.engine import MetricsHook, TaskMetrics, Workflow, metrics

from .shapes import Shape


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fail_multiples_of_three(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(x)
    return x


@pytest.fixture
def counted() -> Workflow:
    """10 numbers through a stream failing 4 of them (0, 3, 6, 9), then a sink."""
    wf = Workflow("counted").step("numbers", lambda: list(range(10)))
    wf.stream("check", fail_multiples_of_three, after="numbers", concurrency=2)
    wf.stream("sink", lambda item: item, after="check", accepts_failures=True)
    return wf


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("task", "kind", "counts"),
    [
        ("numbers", "step", (1, 1, 0)),
        ("check", "stream", (10, 6, 4)),
        ("sink", "stream", (10, 10, 0)),
    ],
)
async def test_items_in_out_and_failed_are_counted_per_task(
    counted: Workflow, task: str, kind: str, counts: tuple[int, int, int]
) -> None:
    result = await counted.run(hooks=[MetricsHook()])

    metrics = result.metrics[task]
    assert (metrics.task, metrics.kind) == (task, kind)
    assert (metrics.items_in, metrics.items_out, metrics.items_failed) == counts


@pytest.mark.anyio
async def test_a_join_counts_a_key_failed_upstream_as_failed() -> None:
    wf = Workflow("w").step("numbers", lambda: list(range(6)))
    wf.stream("check", fail_multiples_of_three, after="numbers")
    wf.stream("same", lambda x: x, after="numbers").join("j", after=["check", "same"])

    result = await wf.run(hooks=[MetricsHook()])

    j = result.metrics["j"]
    assert (j.kind, j.items_in, j.items_out, j.items_failed) == ("join", 6, 4, 2)


@pytest.mark.anyio
async def test_times_and_percentiles_are_ordered(counted: Workflow) -> None:
    result = await counted.run(hooks=[MetricsHook()])

    for m in result.metrics.values():
        assert 0 <= m.p50_ms <= m.p90_ms <= m.p99_ms <= m.max_ms
        assert 0 <= m.busy_s <= m.wall_s
        assert m.throughput == pytest.approx(m.items_out / m.wall_s)


@pytest.mark.anyio
async def test_run_metrics_are_empty_without_a_metrics_hook(diamond: Shape) -> None:
    result = await diamond.wf.run()

    assert result.metrics == {}


@pytest.mark.anyio
async def test_run_metrics_are_the_final_snapshot_of_the_metrics_hook(diamond: Shape) -> None:
    hook = MetricsHook()

    result = await diamond.wf.run(hooks=[hook])

    assert set(result.metrics) == {"a", "b", "c", "d"}
    assert dict(result.metrics) == hook.snapshot()


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    hook = MetricsHook(clock=Clock())
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))
    hook.on_task_start(task="t")
    for ms in range(100, 0, -1):
        hook.on_item_start(task="t", key=ms)
        hook.on_item_done(task="t", key=ms, latency=ms / 1000)

    m = hook.snapshot()["t"]

    assert (m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms) == pytest.approx((50, 90, 99, 100))


def test_a_snapshot_after_more_items_takes_their_latencies_in() -> None:
    hook = MetricsHook(clock=Clock())
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))
    hook.on_task_start(task="t")
    for ms in range(1, 11):
        hook.on_item_start(task="t", key=ms)
        hook.on_item_done(task="t", key=ms, latency=ms / 1000)
    assert hook.snapshot()["t"].p50_ms == pytest.approx(5)
    assert hook.snapshot()["t"].p50_ms == pytest.approx(5)  # asked again: the same figures

    for ms in range(91, 101):
        hook.on_item_start(task="t", key=ms)
        hook.on_item_failed(task="t", key=ms, error=ValueError("x"), latency=ms / 1000)

    assert hook.snapshot()["t"].p50_ms == pytest.approx(10)
    assert hook.snapshot()["t"].p99_ms == pytest.approx(100)


def test_a_long_run_keeps_a_fixed_sample_of_latencies_and_the_exact_maximum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "SAMPLE", 1000)
    hook = MetricsHook(clock=Clock())
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))
    hook.on_task_start(task="t")
    latencies = [(i * 7919 % 100_000 + 1) / 1000 for i in range(100_000)]  # 1..100000 ms
    for key, latency in enumerate(latencies):
        hook.on_item_start(task="t", key=key)
        hook.on_item_done(task="t", key=key, latency=latency)

    m = hook.snapshot()["t"]

    assert len(hook._tallies["t"].latencies) == 1000  # memory does not grow with the run
    assert m.items_out == 100_000
    assert m.max_ms == pytest.approx(100_000)
    # a uniform sample of 1000: each percentile within a few percent of the exact one
    assert m.p50_ms == pytest.approx(50_000, rel=0.06)
    assert m.p90_ms == pytest.approx(90_000, rel=0.03)
    assert m.p99_ms == pytest.approx(99_000, rel=0.01)


def test_busy_time_counts_only_time_with_an_item_in_flight() -> None:
    clock = Clock()
    hook = MetricsHook(clock=clock)
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))

    def at(now: float) -> MetricsHook:
        clock.now = now
        return hook

    at(0).on_task_start(task="t")
    at(1).on_item_start(task="t", key="a")
    at(2).on_item_start(task="t", key="b")  # overlaps a: counted once
    at(3).on_item_done(task="t", key="a", latency=2.0)
    at(4).on_item_failed(task="t", key="b", error=ValueError(), latency=2.0)
    at(6).on_item_start(task="t", key="c")
    at(7).on_item_done(task="t", key="c", latency=1.0)
    at(10).on_task_end(task="t", error=None)

    m = hook.snapshot()["t"]

    assert (m.wall_s, m.busy_s) == (10.0, 4.0)
    assert (m.items_in, m.items_out, m.items_failed) == (3, 2, 1)
    assert m.throughput == pytest.approx(0.2)


def test_a_running_task_is_measured_up_to_now() -> None:
    clock = Clock()
    hook = MetricsHook(clock=clock)
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))
    hook.on_task_start(task="t")
    hook.on_item_start(task="t", key=1)
    clock.now = 5.0

    m = hook.snapshot()["t"]

    assert (m.wall_s, m.busy_s) == (5.0, 5.0)


def test_as_dict_gives_every_field_by_name() -> None:
    m = TaskMetrics("t", "step", 1, 1, 0, 2.0, 1.0, 0.5, 1.0, 2.0, 3.0, 4.0, 0.5, 2.5)

    assert m.as_dict() == {
        "task": "t",
        "kind": "step",
        "items_in": 1,
        "items_out": 1,
        "items_failed": 0,
        "wall_s": 2.0,
        "busy_s": 1.0,
        "throughput": 0.5,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": 3.0,
        "max_ms": 4.0,
        "started_s": 0.5,
        "ended_s": 2.5,
    }


def test_a_task_is_placed_on_the_runs_timeline() -> None:
    clock = Clock()
    hook = MetricsHook(clock=clock)
    hook.bind({"a": "stream", "b": "stream"})
    clock.now = 10.0
    hook.on_run_start(workflow="w", tasks=("a", "b"))
    clock.now = 11.0
    hook.on_task_start(task="a")
    clock.now = 12.5
    hook.on_task_start(task="b")
    hook.on_task_end(task="a", error=None)

    snapshot = hook.snapshot()

    assert (snapshot["a"].started_s, snapshot["a"].ended_s) == (1.0, 2.5)
    assert (snapshot["b"].started_s, snapshot["b"].ended_s) == (2.5, None)


def test_the_latencies_behind_the_percentiles_can_be_had() -> None:
    hook = MetricsHook()
    hook.bind({"t": "stream"})
    hook.on_run_start(workflow="w", tasks=("t",))
    for key, latency in enumerate([0.25, 0.5, 0.125]):
        hook.on_item_start(task="t", key=key)
        hook.on_item_done(task="t", key=key, latency=latency)

    assert hook.latencies("t") == [0.25, 0.5, 0.125]
