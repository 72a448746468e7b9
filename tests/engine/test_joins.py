"""Joins: per key, one dict of every upstream's value, or one Failure with the partial values."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from offerflow.engine import Failure, Workflow
from offerflow.errors import TaskFailedError


async def numbers() -> list[int]:
    return list(range(5))


def by_key(items: list[Any]) -> dict[Any, Any]:
    return {item.key if isinstance(item, Failure) else item["key"]: item for item in items}


def joined(**branches: Any) -> Workflow:
    """``numbers`` fanned out to one stream per branch, joined as ``j``."""
    wf = Workflow("w", channel_size=1).step("numbers", numbers)
    wf.stream("key", lambda x: x, after="numbers")
    for name, fn in branches.items():
        wf.stream(name, fn, after="key")
    wf.join("j", after=["key", *branches])
    return wf


@pytest.mark.anyio
async def test_a_join_emits_one_dict_per_key_with_every_upstream_value() -> None:
    wf = joined(square=lambda x: x * x, negative=lambda x: -x)

    result = await wf.run()

    assert sorted(result.results["j"], key=lambda item: item["key"]) == [
        {"key": x, "square": x * x, "negative": -x} for x in range(5)
    ]


@pytest.mark.anyio
async def test_a_key_that_failed_upstream_becomes_one_failure_with_the_partial_values() -> None:
    error = ValueError("no square for 3")

    def square(x: int) -> int:
        if x == 3:
            raise error
        return x * x

    result = await joined(square=square, negative=lambda x: -x).run()

    items = by_key(result.results["j"])
    failure = items.pop(3)
    assert failure == Failure(
        key=3, task="square", error=error, value=3, attempts=1, partial={"key": 3, "negative": -3}
    )
    assert all(isinstance(item, dict) for item in items.values())


@pytest.mark.anyio
async def test_keys_missing_from_an_upstream_fail_the_join_naming_them() -> None:
    wf = Workflow("w").step("numbers", numbers).step("fewer", lambda: [0, 1])
    wf.stream("all", lambda x: x, after="numbers").stream("some", lambda x: x, after="fewer")
    wf.join("j", after=["all", "some"])

    with pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "j"
    assert isinstance(info.value.cause, LookupError)
    assert "3 keys" in str(info.value.cause)
    assert "2 (missing from 'some')" in str(info.value.cause)


@pytest.mark.anyio
async def test_a_join_drains_one_upstream_while_another_has_not_started() -> None:
    # `late` waits for `early` to finish all its items: a join that read its upstreams in
    # lockstep would stop reading `early` once its one-item channel is full, and hang
    early_done = anyio.Event()
    count = 0

    def early(x: int) -> int:
        nonlocal count
        count += 1
        if count == 100:
            early_done.set()
        return x

    async def late(x: int) -> int:
        await early_done.wait()
        return x

    async def hundred() -> range:
        return range(100)

    wf = Workflow("w", channel_size=1).step("hundred", hundred)
    wf.stream("early", early, after="hundred").stream("late", late, after="hundred")
    wf.join("j", after=["early", "late"])

    with anyio.fail_after(5):
        result = await wf.run()

    assert len(result.results["j"]) == 100


@pytest.mark.anyio
async def test_a_key_delivered_twice_by_one_upstream_fails_the_join() -> None:
    wf = Workflow("w").step("letters", lambda: ["a", "a"]).step("other", lambda: ["a"])
    wf.stream("twice", lambda x: x, after="letters", key=str)
    wf.stream("once", lambda x: x, after="other", key=str)
    wf.join("j", after=["twice", "once"])

    with pytest.raises(TaskFailedError, match="twice") as info:
        await wf.run()

    assert info.value.task == "j"


@pytest.mark.anyio
async def test_items_leaving_a_join_keep_their_key() -> None:
    wf = joined(same=lambda x: x)
    wf.stream("fail", lambda item: 1 / 0, after="j")

    result = await wf.run()

    assert sorted(failure.key for failure in result.results["fail"]) == list(range(5))


@pytest.mark.anyio
@pytest.mark.parametrize("max_lead", [None, 8])
async def test_a_join_with_max_lead_keeps_a_fast_upstream_in_step(max_lead: int | None) -> None:
    # `fast` answers at once, `slow` yields to the loop a few times per item: without a bound
    # `fast` finishes long before `slow`, with one it is never far ahead of it
    emitted = 0
    leads: list[int] = []

    def fast(x: int) -> int:
        nonlocal emitted
        emitted += 1
        return x

    async def slow(x: int) -> int:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        leads.append(emitted - x)
        return x

    async def items() -> range:
        return range(500)

    wf = Workflow("w", channel_size=2).step("items", items)
    wf.stream("fast", fast, after="items").stream("slow", slow, after="items")
    wf.join("j", after=["fast", "slow"], max_lead=max_lead)

    with anyio.fail_after(10):
        result = await wf.run()

    assert sorted(result.results["j"], key=lambda v: v["fast"]) == [
        {"fast": i, "slow": i} for i in range(500)
    ]
    if max_lead is None:
        assert max(leads) > 100  # the skew the bound is for
    else:
        # held at max_lead, plus what its channel and its one worker hold
        assert max(leads) <= max_lead + 2 + 2


@pytest.mark.anyio
async def test_max_lead_on_an_upstream_that_feeds_another_still_completes() -> None:
    # b is fed by a: a is held back while b catches up on what a has already sent it
    async def numbers() -> range:
        return range(300)

    async def later(x: int) -> int:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return x

    wf = Workflow("w", channel_size=1).step("numbers", numbers)
    wf.stream("a", lambda x: x, after="numbers").stream("b", later, after="a")
    wf.join("j", after=["a", "b"], max_lead=2)

    with anyio.fail_after(10):
        result = await wf.run()

    assert len(result.results["j"]) == 300


def test_max_lead_must_leave_room_to_resume() -> None:
    wf = Workflow("w").step("n", lambda: [1]).stream("a", abs, after="n")
    wf.stream("b", abs, after="n")
    with pytest.raises(ValueError, match="max_lead"):
        wf.join("j", after=["a", "b"], max_lead=1)


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 3])
async def test_upstreams_in_opposite_orders_with_max_lead_still_complete(concurrency: int) -> None:
    # each upstream leads with keys the other delivers last: holding both back would deadlock
    async def ascending() -> range:
        return range(100)

    async def descending() -> list[int]:
        return list(reversed(range(100)))

    async def later(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    wf = Workflow("w").step("up", ascending).step("down", descending)
    wf.stream("a", later, after="up", key=lambda x: x, concurrency=concurrency)
    wf.stream("b", later, after="down", key=lambda x: x, concurrency=concurrency)
    wf.join("j", after=["a", "b"], max_lead=4)

    with anyio.fail_after(10):
        result = await wf.run()

    assert sorted(v["a"] for v in result.results["j"]) == list(range(100))


@pytest.mark.anyio
async def test_max_lead_holds_back_an_upstream_with_several_carriers() -> None:
    # `fast` has three workers: all of them wait while it leads, so it stays near max_lead
    emitted = 0
    leads: list[int] = []

    async def fast(x: int) -> int:
        nonlocal emitted
        emitted += 1
        return x

    async def slow(x: int) -> int:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        leads.append(emitted - x)
        return x

    async def items() -> range:
        return range(300)

    wf = Workflow("w").step("items", items)
    wf.stream("fast", fast, after="items", concurrency=3).stream("slow", slow, after="items")
    wf.join("j", after=["fast", "slow"], max_lead=8)

    with anyio.fail_after(10):
        result = await wf.run()

    assert len(result.results["j"]) == 300
    # held at max_lead, plus one item in each of its three workers
    assert max(leads) <= 8 + 3 + 1
