"""The Workflow: build a DAG of batch, stream and join tasks, validate it, run it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import anyio

from offerflow.engine.hooks import Hook
from offerflow.engine.policy import Policy
from offerflow.engine.runner import Run, RunResult
from offerflow.engine.tasks import (
    JoinTask,
    StepTask,
    StreamTask,
    TaskKind,
    TaskSpec,
    check_name,
    validate,
)
from offerflow.errors import DuplicateTaskError, GraphError

_DEFAULT_POLICY = Policy()


class Workflow:
    """A named DAG of tasks, built with ``step``, ``stream`` and ``join``, then ``run``.

    Every edge between item-producing tasks is a channel holding at most ``channel_size``
    items, so a fast producer waits for a slow consumer instead of filling memory.
    """

    def __init__(self, name: str, channel_size: int = 256) -> None:
        if channel_size < 0:
            raise ValueError(f"channel_size must be >= 0, got {channel_size}")
        self.name = name
        self.channel_size = channel_size
        self._tasks: dict[str, TaskSpec] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names, in the order they were added."""
        return tuple(self._tasks)

    def graph(self) -> dict[str, tuple[TaskKind, tuple[str, ...]]]:
        """Each task's kind and upstream tasks, in the order the tasks were added: the DAG as
        data, to draw or to record (it runs nothing)."""
        return {name: (spec.kind, spec.after) for name, spec in self._tasks.items()}

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        after: Sequence[str] = (),
        policy: Policy | None = None,
    ) -> Workflow:
        """Add a task called once with each dependency's result as a keyword argument.

        A dependency that is a stream or join task gives the list of its items (values and
        Failures). A sync ``fn`` runs in a worker thread, an async one on the event loop.
        """
        deps = self._names(name, after)
        _check_callable(name, fn)
        self._add(StepTask(name, fn, deps, policy or _DEFAULT_POLICY))
        return self

    def stream(
        self,
        name: str,
        fn: Callable[[Any], Any],
        *,
        after: str,
        concurrency: int = 1,
        key: Callable[[Any], Hashable] | None = None,
        policy: Policy | None = None,
        accepts_failures: bool = False,
        collect: bool = True,
        batch_size: int | None = None,
        linger_s: float = 0.005,
    ) -> Workflow:
        """Add a task called once per item of its one upstream, ``concurrency`` items at a time.

        Fed by a step, each element of its result is an item, keyed by ``key(element)``
        or by its index; fed by a stream or join, items keep their keys. An exception from
        ``fn`` (after the policy's retries) emits a Failure in place of the value and the run
        goes on. Failures from upstream pass through untouched unless ``accepts_failures``.
        A sync ``fn`` runs on the event loop: keep it cheap, or make it async. Without a
        downstream task, the items are collected as the run's result if ``collect``.

        With ``batch_size``, ``fn`` is called with a list of up to ``batch_size`` values, in
        arrival order, and returns a sequence of as many results: result i is item i's and
        keeps its key. A batch goes to ``fn`` once full, ``linger_s`` seconds after its first
        item arrived, or at end of stream, whichever comes first; ``concurrency`` counts
        batches in flight. A result that is an :class:`ItemError` makes its item a Failure
        (it is not retried; a fatal error fails the task). The policy applies to each call,
        so to the whole batch: if ``fn`` raises after it, every item of the batch becomes a
        Failure (unless the error is fatal). A result of the wrong length fails the task.
        Upstream Failures still pass by untouched unless ``accepts_failures``, which puts
        them into batches too. Hooks see each item, with its batch's latency. ``linger_s`` is
        ignored without ``batch_size``.
        """
        if not isinstance(after, str):
            raise GraphError(
                f"stream task {name!r} takes exactly one upstream task name, got {after!r}",
                tasks=(str(name),),
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise GraphError(
                f"stream task {name!r} needs concurrency >= 1, got {concurrency!r}",
                tasks=(str(name),),
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise GraphError(
                f"stream task {name!r} needs batch_size >= 1 or None, got {batch_size!r}",
                tasks=(str(name),),
            )
        # `not >=` also refuses NaN
        if isinstance(linger_s, bool) or not isinstance(linger_s, int | float) or not linger_s >= 0:
            raise GraphError(
                f"stream task {name!r} needs linger_s >= 0 seconds, got {linger_s!r}",
                tasks=(str(name),),
            )
        self._names(name, (after,))
        _check_callable(name, fn)
        self._add(
            StreamTask(
                name,
                fn,
                after,
                concurrency,
                key,
                policy or _DEFAULT_POLICY,
                accepts_failures,
                collect,
                batch_size=batch_size,
                linger_s=float(linger_s),
            )
        )
        return self

    def join(
        self,
        name: str,
        *,
        after: Sequence[str],
        collect: bool = True,
        max_lead: int | None = None,
    ) -> Workflow:
        """Add a task emitting, per key, ``{upstream: value}`` once every upstream delivered it.

        If an upstream delivered a Failure for the key, the join emits one Failure instead,
        with the other upstreams' values as ``partial``. A key missing from some upstream at
        the end of the streams fails the join.

        With ``max_lead``, an upstream that has delivered that many keys the others have not
        is not read until they are down to half of it, so parallel branches stay in step and
        the keys held by the join stay bounded (without it they grow with the skew). An
        upstream fed by another still catches up (what the leader delivered, it has sent on),
        but one that waits for another through something outside the graph (an event set when
        the other is done) would wait forever: leave ``max_lead`` unset there.
        """
        if max_lead is not None and max_lead < 2:
            raise ValueError(f"max_lead must be at least 2, got {max_lead}")
        deps = self._names(name, after)
        if len(deps) < 2:
            raise GraphError(
                f"join task {name!r} needs at least two upstream tasks, got {list(deps)}",
                tasks=(name, *deps),
            )
        self._add(JoinTask(name, deps, collect, max_lead))
        return self

    def validate(self) -> tuple[str, ...]:
        """Return the task names in topological order; raise a GraphError if the DAG is invalid."""
        return validate(self._tasks)

    async def run(self, *, hooks: Sequence[Hook] = ()) -> RunResult:
        """Validate, then run every task; raise TaskFailedError naming a task that failed."""
        order = self.validate()
        run = Run(self.name, dict(self._tasks), order, channel_size=self.channel_size, hooks=hooks)
        return await run.execute()

    def run_sync(self, *, hooks: Sequence[Hook] = ()) -> RunResult:
        """Run the workflow in a new event loop (for scripts; inside async code await ``run``)."""
        return anyio.run(partial(self.run, hooks=hooks))

    def _names(self, name: str, after: Sequence[str]) -> tuple[str, ...]:
        check_name(name)
        if isinstance(after, str):
            raise GraphError(
                f"task {name!r}: after= takes a sequence of task names, got the string {after!r}",
                tasks=(name,),
            )
        deps = tuple(after)
        repeated = sorted({dep for dep in deps if deps.count(dep) > 1})
        if repeated:
            raise GraphError(
                f"task {name!r} lists {', '.join(map(repr, repeated))} more than once in after=",
                tasks=(name, *repeated),
            )
        return deps

    def _add(self, spec: TaskSpec) -> None:
        if spec.name in self._tasks:
            raise DuplicateTaskError(
                f"workflow {self.name!r} already has a task named {spec.name!r}",
                tasks=(spec.name,),
            )
        self._tasks[spec.name] = spec


def _check_callable(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"task {name!r}: fn must be callable, got {fn!r}")
