"""Task failures: the first one cancels the run and surfaces as exactly one TaskFailedError."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from offerflow.engine import Policy, Workflow
from offerflow.errors import TaskFailedError

from .recorder import Recorder
from .shapes import FailingShape


@pytest.mark.anyio
async def test_a_failing_batch_task_cancels_its_running_sibling(failing: FailingShape) -> None:
    with anyio.fail_after(5), pytest.raises(TaskFailedError):
        await failing.wf.run()

    assert failing.sibling_cancelled


@pytest.mark.anyio
async def test_a_task_failure_surfaces_as_one_error_naming_the_task_and_chaining_the_cause(
    failing: FailingShape,
) -> None:
    with pytest.raises(TaskFailedError) as info:
        await failing.wf.run()

    assert type(info.value) is TaskFailedError
    assert info.value.task == "boom"
    assert info.value.cause is failing.error
    assert info.value.__cause__ is failing.error
    assert "'boom'" in str(info.value)


@pytest.mark.anyio
async def test_tasks_after_a_failed_task_never_run(failing: FailingShape) -> None:
    with pytest.raises(TaskFailedError):
        await failing.wf.run()

    assert failing.calls == []


@pytest.mark.anyio
async def test_hooks_hear_the_failed_task_and_the_run_error(
    failing: FailingShape, recorder: Recorder
) -> None:
    with pytest.raises(TaskFailedError) as info:
        await failing.wf.run(hooks=[recorder])

    assert {"task": "boom", "error": failing.error} in recorder.named("task_end")
    assert recorder.events[-1] == ("run_end", {"workflow": "failing", "error": info.value})


def not_iterable() -> int:
    return 42


def bad_key(x: Any) -> Any:
    raise KeyError(x)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("build", "cause"),
    [
        (lambda wf: wf.step("src", not_iterable).stream("s", str, after="src"), TypeError),
        (
            lambda wf: wf.step("src", lambda: [1]).stream("s", str, after="src", key=bad_key),
            KeyError,
        ),
    ],
    ids=["stream-over-a-non-iterable", "key-function-raising"],
)
async def test_a_broken_stream_input_fails_the_stream_task(
    build: Any, cause: type[Exception]
) -> None:
    wf = build(Workflow("w"))

    with pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "s"
    assert isinstance(info.value.cause, cause)


@pytest.mark.anyio
async def test_cancelling_the_caller_cancels_the_run_without_a_task_error() -> None:
    running = anyio.Event()

    async def forever() -> None:
        running.set()
        await anyio.sleep_forever()

    wf = Workflow("w").step("forever", forever)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wf.run)
            await running.wait()
            tg.cancel_scope.cancel()

    assert tg.cancel_scope.cancelled_caught


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_a_failure_stops_a_stream_that_would_run_forever() -> None:
    # `count` pulls from an endless generator and never waits for input: it must still yield
    # to the event loop, or the cancellation could not reach it
    def forever() -> Any:
        n = 0
        while True:
            yield n
            n += 1

    async def source() -> Any:
        return forever()

    wf = Workflow("w", channel_size=4).step("source", source)
    wf.stream("count", lambda x: x, after="source", collect=False)
    wf.step("boom", lambda: 1 / 0)

    with anyio.fail_after(5), pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "boom"


class _DiskFull(OSError):
    pass


@pytest.mark.anyio
@pytest.mark.parametrize("observed", [False, True], ids=["fast path", "with hooks"])
async def test_a_fatal_item_error_fails_the_task_instead_of_the_item(observed: bool) -> None:
    seen: list[int] = []

    def sink(n: int) -> None:
        seen.append(n)
        if n == 3:
            raise _DiskFull("no space left")

    wf = (
        Workflow("fatal")
        .step("numbers", lambda: range(100))
        .stream(
            "sink",
            sink,
            after="numbers",
            policy=Policy(fatal=lambda exc: isinstance(exc, OSError)),
            collect=False,
        )
    )
    with pytest.raises(TaskFailedError) as info:
        await wf.run(hooks=[Recorder()] if observed else [])
    assert info.value.task == "sink"
    assert isinstance(info.value.cause, _DiskFull)
    assert seen == [0, 1, 2, 3]
