"""Fused edges: an item runs on through the tasks after it that never await, in one coroutine."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from offerflow.engine import MetricsHook, Policy, Workflow
from offerflow.errors import TaskFailedError

from .recorder import Recorder


def _coroutines() -> tuple[Workflow, dict[str, dict[int, int]]]:
    """``items -> a (async, 3 at a time) -> b -> c`` recording which coroutine ran each item."""
    seen: dict[str, dict[int, int]] = defaultdict(dict)

    def mark(task: str) -> Callable[[int], int]:
        def record(x: int) -> int:
            seen[task][x] = anyio.get_current_task().id
            return x

        return record

    async def a(x: int) -> int:
        await anyio.lowlevel.checkpoint()  # lets the items of a's workers interleave
        return mark("a")(x)

    wf = Workflow("w").step("items", lambda: range(50))
    wf.stream("a", a, after="items", concurrency=3)
    wf.stream("b", mark("b"), after="a")
    wf.stream("c", mark("c"), after="b")
    return wf, seen


@pytest.mark.anyio
async def test_a_chain_into_tasks_that_never_await_runs_each_item_in_one_coroutine() -> None:
    wf, seen = _coroutines()

    result = await wf.run()

    assert sorted(result.results["c"]) == list(range(50))
    assert seen["a"] == seen["b"] == seen["c"]
    assert len(set(seen["a"].values())) == 3  # a's three workers carried them all


@pytest.mark.anyio
async def test_a_task_with_a_second_consumer_hands_its_items_over() -> None:
    # b fans out to c and d: its items cross channels to c's own worker
    wf, seen = _coroutines()
    wf.stream("d", lambda x: x, after="b")

    await wf.run()

    assert seen["a"] == seen["b"]
    assert not set(seen["b"].values()) & set(seen["c"].values())


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [2, 4])
async def test_a_task_that_awaits_keeps_workers_of_its_own(concurrency: int) -> None:
    # `slow` is not fused after `quick`: it reaches its concurrency though quick runs one at a time
    in_flight = peak = 0
    full = anyio.Event()

    async def slow(x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == concurrency:
            full.set()
        await full.wait()
        in_flight -= 1
        return x

    wf = Workflow("w").step("items", lambda: range(20))
    wf.stream("quick", lambda x: x, after="items")
    wf.stream("slow", slow, after="quick", concurrency=concurrency)

    with anyio.fail_after(5):
        result = await wf.run()

    assert peak == concurrency
    assert sorted(result.results["slow"]) == list(range(20))


@pytest.mark.anyio
async def test_each_fused_task_ends_when_its_own_last_item_is_done() -> None:
    # a's last item waits in a while b and c have long finished the others: each task's end
    # comes after its own items and in the order of the chain
    release = anyio.Event()

    async def a(x: int) -> int:
        if x == 9:
            await release.wait()
        return x

    def b(x: int) -> int:
        if x == 8:
            release.set()
        return x

    recorder = Recorder()
    wf = Workflow("w").step("items", lambda: range(10))
    wf.stream("a", a, after="items", concurrency=2)
    wf.stream("b", b, after="a")
    wf.stream("c", lambda x: x, after="b")

    await wf.run(hooks=[recorder])

    events = [
        (name, fields["task"], fields.get("key"))
        for name, fields in recorder.events
        if name in ("task_end", "item_done") and fields["task"] != "items"
    ]
    ends = [event for event in events if event[0] == "task_end"]
    assert ends == [("task_end", "a", None), ("task_end", "b", None), ("task_end", "c", None)]
    for task in ("a", "b", "c"):
        done = [i for i, event in enumerate(events) if event[:2] == ("item_done", task)]
        assert len(done) == 10
        assert max(done) < events.index(("task_end", task, None))
    # a ended before its last item went through b and c
    assert events.index(("task_end", "a", None)) < events.index(("item_done", "b", 9))


@pytest.mark.anyio
async def test_metrics_of_fused_tasks_count_their_own_items() -> None:
    wf, _ = _coroutines()
    metrics = MetricsHook()

    result = await wf.run(hooks=[metrics])

    for task in ("a", "b", "c"):
        m = result.metrics[task]
        assert (m.kind, m.items_in, m.items_out, m.items_failed) == ("stream", 50, 50, 0)


@pytest.mark.anyio
async def test_a_fatal_error_in_a_fused_task_fails_that_task() -> None:
    class Full(Exception):
        pass

    def sink(x: int) -> int:
        if x == 3:
            raise Full("no space left")
        return x

    async def a(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    wf = Workflow("w").step("items", lambda: range(10))
    wf.stream("a", a, after="items", concurrency=2)
    wf.stream("sink", sink, after="a", policy=_fatal(Full))

    with pytest.raises(TaskFailedError) as raised:
        await wf.run()

    assert raised.value.task == "sink"
    assert isinstance(raised.value.cause, Full)


@pytest.mark.anyio
async def test_a_failing_hook_in_a_fused_task_fails_that_task() -> None:
    class Broken(Recorder):
        def on_item_done(self, *, task: str, key: Any, latency: float) -> None:
            if task == "c":
                raise RuntimeError("hook broke")

    wf, _ = _coroutines()

    with pytest.raises(TaskFailedError) as raised:
        await wf.run(hooks=[Broken()])

    assert raised.value.task == "c"


def _fatal(kind: type[Exception]) -> Policy:
    return Policy(fatal=lambda error: isinstance(error, kind))
