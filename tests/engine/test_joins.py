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
    wf = Workflow("w", channel_size=1).batch("numbers", numbers)
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
    wf = Workflow("w").batch("numbers", numbers).batch("fewer", lambda: [0, 1])
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

    wf = Workflow("w", channel_size=1).batch("hundred", hundred)
    wf.stream("early", early, after="hundred").stream("late", late, after="hundred")
    wf.join("j", after=["early", "late"])

    with anyio.fail_after(5):
        result = await wf.run()

    assert len(result.results["j"]) == 100


@pytest.mark.anyio
async def test_a_key_delivered_twice_by_one_upstream_fails_the_join() -> None:
    wf = Workflow("w").batch("letters", lambda: ["a", "a"]).batch("other", lambda: ["a"])
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
