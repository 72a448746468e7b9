"""Graph checks and order: a workflow's tasks validated and sorted with graphlib."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping

from offerflow.engine.tasks import JoinTask, StepTask, StreamTask, TaskSpec
from offerflow.errors import CycleError, GraphError, UnknownDependencyError


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
