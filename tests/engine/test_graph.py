"""Validation: an invalid graph is refused before anything runs, naming the tasks involved."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from offerflow.engine import Workflow
from offerflow.errors import CycleError, DuplicateTaskError, GraphError, UnknownDependencyError

from .recorder import Recorder
from .shapes import Shape


def noop(*_: Any, **__: Any) -> None:
    return None


def test_validate_returns_an_order_that_respects_every_edge(diamond: Shape) -> None:
    order = diamond.wf.validate()

    assert sorted(order) == ["a", "b", "c", "d"]
    for upstream, downstream in diamond.edges:
        assert order.index(upstream) < order.index(downstream)


def test_unknown_dependency_names_the_task_and_the_missing_dependency() -> None:
    wf = Workflow("w").step("load", noop).step("score", noop, after=["load", "ghost"])

    with pytest.raises(UnknownDependencyError, match=r"'score'.*'ghost'") as info:
        wf.validate()
    assert info.value.tasks == ("score", "ghost")


@pytest.mark.parametrize(
    "add_again",
    [
        lambda wf: wf.step("a", noop),
        lambda wf: wf.stream("a", noop, after="src"),
        lambda wf: wf.join("a", after=["s1", "s2"]),
    ],
    ids=["step", "stream", "join"],
)
def test_duplicate_task_name_is_refused_when_added(add_again: Any) -> None:
    wf = Workflow("w").step("src", noop).step("a", noop)

    with pytest.raises(DuplicateTaskError, match="'a'") as info:
        add_again(wf)
    assert info.value.tasks == ("a",)


def test_cycle_error_names_the_cycle_as_a_path(cycle: Shape) -> None:
    with pytest.raises(CycleError) as info:
        cycle.wf.validate()

    assert sorted(info.value.tasks) == ["a", "b", "c"]
    path = str(info.value).split(": ", 1)[1].split(" -> ")
    assert path[0] == path[-1]
    assert set(itertools.pairwise(path)) == set(cycle.edges)


def test_a_task_depending_on_itself_is_a_cycle() -> None:
    wf = Workflow("w").step("a", noop, after=["a"])

    with pytest.raises(CycleError, match="a -> a"):
        wf.validate()


@pytest.mark.parametrize("name", ["", "1st", "two words", "kebab-case", "class", "None"])
def test_task_names_must_be_usable_as_keyword_arguments(name: str) -> None:
    with pytest.raises(GraphError, match="identifier") as info:
        Workflow("w").step(name, noop)
    assert info.value.tasks == (name,)


def test_key_on_a_stream_fed_by_a_stream_is_refused() -> None:
    wf = Workflow("w").step("src", noop).stream("first", noop, after="src")
    wf.stream("second", noop, after="first", key=lambda item: item)

    with pytest.raises(GraphError, match=r"'second'.*key=.*'first'") as info:
        wf.validate()
    assert info.value.tasks == ("second", "first")


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda wf: wf.join("j", after=["s1"]), "j"),
        (lambda wf: wf.join("j", after=["s1", "src"]), "src"),
        (lambda wf: wf.stream("s", noop, after=["src"]), "s"),
        (lambda wf: wf.stream("s", noop, after="src", concurrency=0), "s"),
        (lambda wf: wf.step("b", noop, after="src"), "src"),
        (lambda wf: wf.step("b", noop, after=["src", "src"]), "src"),
    ],
    ids=[
        "join-of-one",
        "join-of-a-batch",
        "stream-of-a-list",
        "zero-concurrency",
        "after-a-string",
        "repeated-dependency",
    ],
)
def test_other_misuse_is_a_graph_error_naming_the_task(build: Any, named: str) -> None:
    wf = Workflow("w").step("src", noop).stream("s1", noop, after="src")
    wf.stream("s2", noop, after="src")

    with pytest.raises(GraphError, match=f"'{named}'"):
        build(wf).validate()


def test_a_negative_channel_size_is_refused() -> None:
    with pytest.raises(ValueError, match="channel_size"):
        Workflow("w", channel_size=-1)


def test_a_task_function_must_be_callable() -> None:
    with pytest.raises(TypeError, match="'a'"):
        Workflow("w").step("a", 42)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_nothing_runs_and_no_hook_fires_on_an_invalid_graph(
    cycle: Shape, recorder: Recorder
) -> None:
    with pytest.raises(CycleError):
        await cycle.wf.run(hooks=[recorder])

    assert cycle.calls == []
    assert recorder.events == []


def test_tasks_lists_the_names_in_the_order_they_were_added(diamond: Shape) -> None:
    assert diamond.wf.tasks == ("a", "b", "c", "d")
