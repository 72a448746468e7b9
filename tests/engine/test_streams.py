"""Stream tasks: items flow through bounded channels, overlap, and fail one at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import anyio
import pytest

from offerflow.engine import Failure, Workflow

from .shapes import Shape


async def numbers() -> list[int]:
    return list(range(6))


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@pytest.mark.anyio
async def test_a_downstream_stream_works_on_item_0_while_its_upstream_still_produces() -> None:
    # the upstream cannot finish item 1 until item 0 went through the downstream task
    downstream_got_0 = anyio.Event()

    async def produce(x: int) -> int:
        if x == 1:
            await downstream_got_0.wait()
        return x

    async def consume(x: int) -> int:
        if x == 0:
            downstream_got_0.set()
        return x

    wf = Workflow("w").step("numbers", numbers)
    wf.stream("produce", produce, after="numbers").stream("consume", consume, after="produce")

    with anyio.fail_after(5):
        result = await wf.run()

    assert result.results["consume"] == list(range(6))


@pytest.mark.anyio
@pytest.mark.parametrize(("channel_size", "concurrency"), [(0, 1), (1, 1), (4, 1), (4, 3)])
async def test_a_producer_gets_no_further_ahead_of_a_blocked_consumer_than_the_channel_bound(
    channel_size: int, concurrency: int
) -> None:
    # the producer fans out to a second consumer, so its items cross channels
    produced = 0
    release = anyio.Event()

    def produce(x: int) -> int:
        nonlocal produced
        produced += 1
        return x

    async def consume(x: int) -> int:
        await release.wait()
        return x

    async def many() -> range:
        return range(1000)

    wf = Workflow("w", channel_size=channel_size).step("many", many)
    wf.stream("produce", produce, after="many")
    wf.stream("consume", consume, after="produce", concurrency=concurrency, collect=False)
    wf.stream("also", lambda x: x, after="produce", collect=False)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wf.run)
            await anyio.wait_all_tasks_blocked()
            # in the consumer's workers, in the channel, and the one waiting to be sent
            assert produced == concurrency + channel_size + 1
            release.set()
    assert produced == 1000


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 2, 5])
async def test_exactly_concurrency_items_are_in_flight_at_most(concurrency: int) -> None:
    in_flight = peak = 0
    full = anyio.Event()

    async def work(x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == concurrency:
            full.set()
        await full.wait()
        in_flight -= 1
        return x

    async def twenty() -> range:
        return range(20)

    wf = Workflow("w").step("twenty", twenty)
    wf.stream("work", work, after="twenty", concurrency=concurrency)

    with anyio.fail_after(5):
        result = await wf.run()

    assert peak == concurrency
    assert sorted(result.results["work"]) == list(range(20))


def always_fail(x: Any) -> Any:
    raise ValueError(x)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "expected"),
    [(None, [0, 1, 2]), (str.upper, ["A", "B", "C"])],
    ids=["index", "key-function"],
)
async def test_items_of_a_batch_result_are_keyed_by_index_or_by_key(
    key: Callable[[Any], Hashable] | None, expected: list[Hashable]
) -> None:
    wf = Workflow("w").step("letters", lambda: ["a", "b", "c"])
    wf.stream("first", lambda x: x, after="letters", key=key)
    wf.stream("second", always_fail, after="first")

    result = await wf.run()

    assert [failure.key for failure in result.results["second"]] == expected


@pytest.mark.anyio
async def test_a_failed_item_becomes_a_failure_envelope_and_the_run_goes_on() -> None:
    error = ValueError("no")

    def check(x: int) -> int:
        if x == 3:
            raise error
        return x

    wf = Workflow("w").step("numbers", numbers).stream("check", check, after="numbers")

    result = await wf.run()

    values = result.results["check"]
    assert values[:3] + values[4:] == [0, 1, 2, 4, 5]
    assert values[3] == Failure(key=3, task="check", error=error, value=3, attempts=1)
    assert values[3].partial == {}


@pytest.mark.anyio
async def test_failures_pass_untouched_through_a_stream_that_does_not_accept_them() -> None:
    seen: list[int] = []

    def middle(x: int) -> int:
        seen.append(x)
        return x

    wf = Workflow("w").step("numbers", numbers).stream("check", fail_odd, after="numbers")
    wf.stream("middle", middle, after="check")

    result = await wf.run()

    assert seen == [0, 2, 4]
    failures = [item for item in result.results["middle"] if isinstance(item, Failure)]
    assert [(f.key, f.task) for f in failures] == [(1, "check"), (3, "check"), (5, "check")]


@pytest.mark.anyio
async def test_a_sink_that_accepts_failures_receives_them_from_upstream() -> None:
    recorded: list[Any] = []

    def sink(item: Any) -> None:
        recorded.append(item)

    wf = Workflow("w").step("numbers", numbers).stream("check", fail_odd, after="numbers")
    wf.stream("middle", lambda x: x, after="check")
    wf.stream("sink", sink, after="middle", accepts_failures=True, collect=False)

    await wf.run()

    assert recorded[0::2] == [0, 2, 4]
    assert all(isinstance(item, Failure) and item.task == "check" for item in recorded[1::2])


@pytest.mark.anyio
async def test_a_stream_feeding_two_streams_sends_every_item_to_both(fan_out: Shape) -> None:
    result = await fan_out.wf.run()

    assert result.results["plus_one"] == [2 * x + 1 for x in range(10)]
    assert sorted(result.results["minus_one"]) == [2 * x - 1 for x in range(10)]


@pytest.mark.anyio
@pytest.mark.parametrize("collect", [True, False])
async def test_a_stream_without_downstream_is_collected_only_if_asked(collect: bool) -> None:
    wf = Workflow("w").step("numbers", numbers)
    wf.stream("last", lambda x: x, after="numbers", collect=collect)

    result = await wf.run()

    assert ("last" in result.results) is collect


@pytest.mark.anyio
async def test_a_sync_stream_function_is_called_on_the_event_loop() -> None:
    wf = Workflow("w").step("numbers", numbers)
    wf.stream("where", lambda _: threading.get_ident(), after="numbers")

    result = await wf.run()

    assert set(result.results["where"]) == {threading.get_ident()}


@pytest.mark.anyio
async def test_an_object_with_an_async_call_method_is_awaited() -> None:
    class Doubler:
        async def __call__(self, x: int) -> int:
            return 2 * x

    wf = Workflow("w").step("numbers", numbers).stream("double", Doubler(), after="numbers")

    result = await wf.run()

    assert result.results["double"] == [0, 2, 4, 6, 8, 10]


@pytest.mark.anyio
async def test_an_empty_batch_result_ends_the_streams_normally() -> None:
    wf = Workflow("w").step("nothing", list).stream("first", always_fail, after="nothing")
    wf.stream("second", always_fail, after="first")

    result = await wf.run()

    assert result.results["second"] == []
