"""Properties over random DAGs and random item lists: order, exactly-once, no vanished item."""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.engine import Failure, Workflow

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[bool]]:
    """Acyclic by construction: a task only depends on tasks of lower index."""
    size = draw(st.integers(min_value=1, max_value=8))
    deps = {
        f"t{i}": [f"t{d}" for d in sorted(draw(st.sets(st.integers(0, i - 1))))] if i else []
        for i in range(size)
    }
    asyncs = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    return deps, asyncs


@SETTINGS
@given(dag=dags())
def test_every_batch_task_runs_once_after_its_dependencies_with_their_results(
    dag: tuple[dict[str, list[str]], list[bool]],
) -> None:
    deps, asyncs = dag
    started: list[str] = []
    received: dict[str, dict[str, Any]] = {}

    def task(name: str, is_async: bool) -> Any:
        def record(kwargs: dict[str, Any]) -> str:
            started.append(name)  # list.append is atomic, sync tasks run in threads
            received[name] = kwargs
            return name

        async def async_fn(**kwargs: Any) -> str:
            return record(kwargs)

        def sync_fn(**kwargs: Any) -> str:
            return record(kwargs)

        return async_fn if is_async else sync_fn

    wf = Workflow("random")
    for (name, after), is_async in zip(deps.items(), asyncs, strict=True):
        wf.step(name, task(name, is_async), after=after)

    result = wf.run_sync()

    assert sorted(started) == sorted(deps)
    for name, after in deps.items():
        assert all(started.index(dep) < started.index(name) for dep in after)
        assert received[name] == {dep: dep for dep in after}
        assert result.results[name] == name


@st.composite
def item_runs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.integers(-1000, 1000), unique=True, max_size=60))
    return {
        "keys": keys,
        "fail_first": draw(st.sets(st.sampled_from(keys))) if keys else set(),
        "fail_second": draw(st.sets(st.sampled_from(keys))) if keys else set(),
        "concurrency": draw(st.tuples(st.integers(1, 4), st.integers(1, 4))),
        "channel_size": draw(st.integers(0, 3)),
    }


def stages(run: dict[str, Any]) -> tuple[Any, Any]:
    async def first(item: tuple[int, str]) -> tuple[int, str]:
        if item[0] % 2:
            await anyio.lowlevel.checkpoint()  # let items overtake each other
        if item[0] in run["fail_first"]:
            raise ValueError("first")
        return item

    def second(item: tuple[int, str]) -> tuple[int, str]:
        if item[0] in run["fail_second"]:
            raise KeyError("second")
        return item

    return first, second


def key_of(item: Any) -> Hashable:
    return item.key if isinstance(item, Failure) else int(item[0])


@SETTINGS
@given(run=item_runs())
def test_every_key_comes_out_of_a_stream_chain_exactly_once(run: dict[str, Any]) -> None:
    first, second = stages(run)
    c1, c2 = run["concurrency"]
    wf = Workflow("chain", channel_size=run["channel_size"])
    wf.step("items", lambda: [(key, f"v{key}") for key in run["keys"]])
    wf.stream("first", first, after="items", key=lambda item: item[0], concurrency=c1)
    wf.stream("second", second, after="first", concurrency=c2)
    wf.stream("sink", lambda item: item, after="second", accepts_failures=True)

    out = wf.run_sync().results["sink"]

    assert collections.Counter(map(key_of, out)) == collections.Counter(run["keys"])
    for item in out:
        key = key_of(item)
        if key in run["fail_first"]:
            assert isinstance(item, Failure)
            assert item.task == "first"
        elif key in run["fail_second"]:
            assert isinstance(item, Failure)
            assert item.task == "second"
        else:
            assert item == (key, f"v{key}")


@SETTINGS
@given(run=item_runs())
def test_every_key_comes_out_of_a_join_exactly_once(run: dict[str, Any]) -> None:
    first, second = stages(run)
    c1, c2 = run["concurrency"]
    wf = Workflow("join", channel_size=run["channel_size"])
    wf.step("items", lambda: [(key, f"v{key}") for key in run["keys"]])
    wf.stream("keyed", lambda item: item, after="items", key=lambda item: item[0])
    wf.stream("first", first, after="keyed", concurrency=c1)
    wf.stream("second", second, after="keyed", concurrency=c2)
    wf.join("j", after=["first", "second"])

    out = wf.run_sync().results["j"]

    keys = [item.key if isinstance(item, Failure) else item["first"][0] for item in out]
    assert collections.Counter(keys) == collections.Counter(run["keys"])
    failed = run["fail_first"] | run["fail_second"]
    assert {item.key for item in out if isinstance(item, Failure)} == failed
