"""Hooks: a run reports run, task, item and retry events, in an order hooks can rely on."""

from __future__ import annotations

import logging
from collections.abc import Hashable

import pytest

from offerflow.engine import Hook, Workflow
from offerflow.errors import TaskFailedError

from .recorder import Recorder
from .shapes import Shape


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(x)
    return x


def pipeline(items: int = 4) -> Workflow:
    wf = Workflow("pipe").step("numbers", lambda: list(range(items)))
    wf.stream("check", fail_odd, after="numbers").stream("echo", lambda x: x, after="check")
    return wf


@pytest.mark.anyio
async def test_the_run_starts_with_the_topological_order_and_ends_last(
    diamond: Shape, recorder: Recorder
) -> None:
    await diamond.wf.run(hooks=[recorder])

    assert recorder.events[0] == (
        "run_start",
        {"workflow": "diamond", "tasks": ("a", "b", "c", "d")},
    )
    assert recorder.events[-1] == ("run_end", {"workflow": "diamond", "error": None})


@pytest.mark.anyio
async def test_a_task_starts_before_its_items_and_ends_after_them(recorder: Recorder) -> None:
    await pipeline().run(hooks=[recorder])

    for task in ("numbers", "check", "echo"):
        mine = [name for name, fields in recorder.events if fields.get("task") == task]
        assert mine[0] == "task_start"
        assert mine[-1] == "task_end"
        assert mine.count("task_start") == mine.count("task_end") == 1


@pytest.mark.anyio
async def test_a_batch_task_reports_its_one_call_as_an_item_keyed_none(diamond: Shape) -> None:
    recorder = Recorder()

    await diamond.wf.run(hooks=[recorder])

    assert [fields["key"] for fields in recorder.named("item_start")] == [None] * 4
    assert len(recorder.named("item_done")) == 4


@pytest.mark.anyio
async def test_a_stream_reports_every_item_done_or_failed(recorder: Recorder) -> None:
    await pipeline().run(hooks=[recorder])

    def keys(event: str) -> list[Hashable]:
        return [f["key"] for f in recorder.named(event) if f["task"] == "check"]

    assert keys("item_start") == [0, 1, 2, 3]
    assert keys("item_done") == [0, 2]
    assert keys("item_failed") == [1, 3]
    failed = [f for f in recorder.named("item_failed") if f["task"] == "check"]
    assert [type(f["error"]) for f in failed] == [ValueError, ValueError]


@pytest.mark.anyio
async def test_a_forwarded_failure_fires_no_item_event_at_the_forwarding_task(
    recorder: Recorder,
) -> None:
    await pipeline().run(hooks=[recorder])

    assert [f["key"] for f in recorder.named("item_start") if f["task"] == "echo"] == [0, 2]


@pytest.mark.anyio
async def test_a_hook_that_overrides_nothing_changes_nothing(diamond: Shape) -> None:
    result = await diamond.wf.run(hooks=[Hook()])

    assert result.results["d"] == {"b": 11, "c": 101}


@pytest.mark.anyio
async def test_a_hook_raising_fails_the_run_naming_the_task() -> None:
    class Broken(Hook):
        def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
            if task == "echo":
                raise RuntimeError("hook bug")

    with pytest.raises(TaskFailedError) as info:
        await pipeline().run(hooks=[Broken()])

    assert info.value.task == "echo"
    assert isinstance(info.value.cause, RuntimeError)


@pytest.mark.anyio
async def test_the_engine_logs_task_events_not_item_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="offerflow.engine"):
        await pipeline(items=2).run()
        few = len(caplog.records)
        caplog.clear()
        await pipeline(items=200).run()
        many = len(caplog.records)

    assert few == many > 0
