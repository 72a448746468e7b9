"""Task specs, and the checks of a graph of them: what a workflow knows before it runs.

A workflow's tasks are validated and sorted with :mod:`graphlib`: an unknown dependency, a
cycle or an input a task cannot take is a :class:`~offerflow.errors.GraphError` naming the tasks.
"""

from __future__ import annotations

import graphlib
import inspect
import keyword
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from offerflow.engine.policy import Policy
from offerflow.errors import CycleError, GraphError, UnknownDependencyError

TaskKind = Literal["step", "stream", "join"]


def check_name(name: str) -> None:
    """Raise GraphError unless ``name`` can be a keyword argument (a step fn receives it so)."""
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
        raise GraphError(
            f"task name {name!r} is not a valid Python identifier "
            "(a dependent step receives each result as a keyword argument of that name)",
            tasks=(str(name),),
        )


def is_async(fn: Callable[..., Any]) -> bool:
    """Return whether calling ``fn`` gives an awaitable (coroutine function or async __call__)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 -- an object with an async __call__
    )


@dataclass(frozen=True, slots=True)
class StepTask:
    """A task called once with its dependencies' whole results, by name."""

    kind: ClassVar[TaskKind] = "step"
    name: str
    fn: Callable[..., Any]
    after: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True, slots=True)
class StreamTask:
    """A task called once per item of its one upstream, with bounded concurrency.

    With a ``batch_size``, it is called once per batch of up to that many items instead.
    """

    kind: ClassVar[TaskKind] = "stream"
    name: str
    fn: Callable[[Any], Any]
    upstream: str
    concurrency: int
    key: Callable[[Any], Hashable] | None
    policy: Policy
    accepts_failures: bool
    collect: bool
    batch_size: int | None = None
    linger_s: float = 0.005

    @property
    def after(self) -> tuple[str, ...]:
        """The one upstream task, as a tuple like every spec's."""
        return (self.upstream,)


@dataclass(frozen=True, slots=True)
class JoinTask:
    """A task that combines the items of several upstream streams by key."""

    kind: ClassVar[TaskKind] = "join"
    name: str
    after: tuple[str, ...]
    collect: bool
    #: hold back an upstream that leads the others by this many keys (None: never)
    max_lead: int | None = None


TaskSpec = StepTask | StreamTask | JoinTask


def validate(tasks: Mapping[str, TaskSpec]) -> tuple[str, ...]:
    """Return the tasks in topological order; raise a GraphError naming the tasks if invalid."""
    for spec in tasks.values():
        for dep in spec.after:
            if dep not in tasks:
                raise UnknownDependencyError(
                    f"task {spec.name!r} depends on unknown task {dep!r}", tasks=(spec.name, dep)
                )
    sorter = graphlib.TopologicalSorter({name: spec.after for name, spec in tasks.items()})
    try:
        order = tuple(sorter.static_order())
    except graphlib.CycleError as exc:
        # graphlib lists the cycle in data-flow order, first node repeated at the end
        cycle: list[str] = exc.args[1]
        raise CycleError(
            f"tasks form a cycle: {' -> '.join(cycle)}", tasks=tuple(cycle[:-1])
        ) from None
    for spec in tasks.values():
        _check_inputs(spec, tasks)
    return order


def _check_inputs(spec: TaskSpec, tasks: Mapping[str, TaskSpec]) -> None:
    if isinstance(spec, StreamTask):
        upstream = tasks[spec.upstream]
        if spec.key is not None and not isinstance(upstream, StepTask):
            raise GraphError(
                f"stream task {spec.name!r} has key= but its upstream {upstream.name!r} is a "
                f"{upstream.kind} task whose items already have keys; key= is only for a "
                "stream fed by a step",
                tasks=(spec.name, upstream.name),
            )
    elif isinstance(spec, JoinTask):
        for dep in spec.after:
            if isinstance(tasks[dep], StepTask):
                raise GraphError(
                    f"join task {spec.name!r} needs stream or join upstreams, "
                    f"but {dep!r} is a step",
                    tasks=(spec.name, dep),
                )


def consumers(tasks: Mapping[str, TaskSpec]) -> dict[str, list[str]]:
    """Return, for every task, the tasks that depend on it, in the order they were added."""
    found: dict[str, list[str]] = {name: [] for name in tasks}
    for spec in tasks.values():
        for dep in spec.after:
            found[dep].append(spec.name)
    return found
