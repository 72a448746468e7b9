"""Steps: called once, after their dependencies, with each result passed by name."""

from __future__ import annotations

import threading

import anyio
import pytest

from offerflow.engine import Failure, Workflow

from .shapes import Shape


@pytest.mark.anyio
async def test_each_task_runs_once_after_its_dependencies(diamond: Shape) -> None:
    await diamond.wf.run()

    assert sorted(diamond.calls) == ["a", "b", "c", "d"]
    for upstream, downstream in diamond.edges:
        assert diamond.calls.index(upstream) < diamond.calls.index(downstream)


@pytest.mark.anyio
async def test_dependencies_are_passed_by_task_name(diamond: Shape) -> None:
    result = await diamond.wf.run()

    assert result.results["d"] == {"b": 11, "c": 101}


@pytest.mark.anyio
async def test_results_hold_every_batch_result(diamond: Shape) -> None:
    result = await diamond.wf.run()

    assert dict(result.results) == {"a": 1, "b": 11, "c": 101, "d": {"b": 11, "c": 101}}


@pytest.mark.anyio
async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    wf = Workflow("w").step("where", threading.get_ident)

    result = await wf.run()

    assert result.results["where"] != loop_thread


@pytest.mark.anyio
async def test_an_async_function_runs_on_the_event_loop() -> None:
    async def where() -> int:
        return threading.get_ident()

    result = await Workflow("w").step("where", where).run()

    assert result.results["where"] == threading.get_ident()


@pytest.mark.anyio
async def test_independent_tasks_run_concurrently() -> None:
    # each task waits for the other to have started: run one after the other, they would hang
    a_started, b_started = anyio.Event(), anyio.Event()

    async def a() -> str:
        a_started.set()
        await b_started.wait()
        return "a"

    async def b() -> str:
        b_started.set()
        await a_started.wait()
        return "b"

    with anyio.fail_after(5):
        result = await Workflow("w").step("a", a).step("b", b).run()

    assert (result.results["a"], result.results["b"]) == ("a", "b")


@pytest.mark.anyio
async def test_a_stream_dependency_gives_the_list_of_its_items() -> None:
    def check(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x * 10

    wf = Workflow("w").step("numbers", lambda: [1, 2, 3]).stream("check", check, after="numbers")
    wf.step("report", lambda check: check, after=["check"])

    result = await wf.run()

    report = result.results["report"]
    assert report[0::2] == [10, 30]
    assert isinstance(report[1], Failure)
    assert (report[1].key, report[1].value) == (1, 2)


@pytest.mark.anyio
async def test_a_stream_consumed_by_a_batch_task_is_not_a_run_result() -> None:
    wf = Workflow("w").step("numbers", lambda: [1, 2]).stream("same", lambda x: x, after="numbers")
    wf.step("total", lambda same: sum(same), after=["same"])

    result = await wf.run()

    assert dict(result.results) == {"numbers": [1, 2], "total": 3}


def test_run_sync_runs_the_workflow_in_a_new_event_loop(diamond: Shape) -> None:
    result = diamond.wf.run_sync()

    assert result.results["d"] == {"b": 11, "c": 101}
    assert result.wall_s >= 0
