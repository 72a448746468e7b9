"""The runner: one run of a validated workflow inside one anyio task group."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from types import MappingProxyType
from typing import Any

import anyio

from offerflow.engine.batched import BatchedStreamStage
from offerflow.engine.channels import Outlet, Receiver, Sender, Slot, channel
from offerflow.engine.hooks import Hook, HookChain
from offerflow.engine.joins import JoinStage
from offerflow.engine.metrics import MetricsHook, TaskMetrics
from offerflow.engine.stages import ItemStage, Stage, StageFailed, StepStage, StreamStage
from offerflow.engine.tasks import JoinTask, StepTask, StreamTask, TaskSpec, consumers, is_async
from offerflow.errors import TaskFailedError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced: results by task, metrics by task, and its wall time in seconds.

    ``results`` holds every step's result and, as a list of values and Failures, the
    items of every stream or join task that has no downstream task and ``collect=True``.
    ``metrics`` is the final snapshot of the first MetricsHook passed to the run, else empty.
    """

    results: Mapping[str, Any]
    metrics: Mapping[str, TaskMetrics]
    wall_s: float


class Run:
    """One execution of a workflow: wires channels and slots, runs the stages, reports once."""

    def __init__(
        self,
        workflow: str,
        tasks: Mapping[str, TaskSpec],
        order: tuple[str, ...],
        *,
        channel_size: int,
        hooks: Sequence[Hook],
    ) -> None:
        self._workflow = workflow
        self._tasks = tasks
        self._order = order
        self._channel_size = channel_size
        self._hooks = tuple(hooks)
        self._chain = HookChain(hooks)
        self._failure: tuple[str, Exception] | None = None
        # a failing task cancels this scope rather than raising: one error, no ExceptionGroup
        self._cancel = anyio.CancelScope()
        self._channels: list[Sender | Receiver] = []

    async def execute(self) -> RunResult:
        """Run every task; raise TaskFailedError naming the first task that failed."""
        metrics = next((h for h in self._hooks if isinstance(h, MetricsHook)), None)
        for hook in self._hooks:
            if isinstance(hook, MetricsHook):
                hook.bind({name: spec.kind for name, spec in self._tasks.items()})
        started = perf_counter()
        logger.info("workflow %r: run started, %d tasks", self._workflow, len(self._order))
        self._chain.on_run_start(workflow=self._workflow, tasks=self._order)
        try:
            results = await self._run_stages()
        except BaseException as exc:
            logger.info("workflow %r: run failed: %r", self._workflow, exc)
            self._chain.on_run_end(workflow=self._workflow, error=exc)
            raise
        wall = perf_counter() - started
        logger.info("workflow %r: run finished in %.3f s", self._workflow, wall)
        self._chain.on_run_end(workflow=self._workflow, error=None)
        return RunResult(
            results=MappingProxyType(results),
            metrics=MappingProxyType(metrics.snapshot() if metrics else {}),
            wall_s=wall,
        )

    async def _run_stages(self) -> dict[str, Any]:
        slots, stages = self._wire()
        try:
            with self._cancel:
                async with anyio.create_task_group() as tg:
                    for name in self._order:
                        for worker in stages[name].workers():
                            tg.start_soon(
                                self._guard, name, worker, name=f"{self._workflow}.{name}"
                            )
        except BaseExceptionGroup as group:
            # the guards let only BaseExceptions through (KeyboardInterrupt, SystemExit)
            interrupt = next((e for e in _leaves(group) if not isinstance(e, Exception)), None)
            if interrupt is None:
                raise
            raise interrupt from None
        finally:
            for end in self._channels:
                end.close()
        if self._failure is not None:
            task, cause = self._failure
            self._chain.on_task_end(task=task, error=cause)
            raise TaskFailedError(task, cause) from cause
        downstream = consumers(self._tasks)
        return {
            name: slot.value
            for name, slot in slots.items()
            if isinstance(self._tasks[name], StepTask) or not downstream[name]
        }

    async def _guard(self, task: str, worker: Callable[[], Awaitable[None]]) -> None:
        try:
            await worker()
        except Exception as exc:
            if isinstance(exc, StageFailed):
                task, exc = exc.task, exc.cause  # failed in a fused task this coroutine ran
            # the first failure wins; later ones are echoes of the cancellation it caused
            if self._failure is None:
                self._failure = (task, exc)
                logger.info("workflow %r: task %r failed: %r", self._workflow, task, exc)
                self._cancel.cancel()

    def _wire(self) -> tuple[dict[str, Slot], dict[str, Stage]]:
        """Create every slot, channel and stage of the run; fuse what can be fused."""
        tasks, downstream = self._tasks, consumers(self._tasks)
        slots = self._slots(downstream)
        fused = {
            name: users[0]
            for name, users in downstream.items()
            if len(users) == 1 and _one_at_a_time(tasks[name]) and _never_waits(tasks[users[0]])
        }
        senders, receivers = self._edges(fused)
        plan = _Carriers(tasks, fused)
        wf, chain = self._workflow, self._chain
        stages: dict[str, Stage] = {}
        for name, spec in tasks.items():
            if isinstance(spec, StepTask):
                deps = {dep: slots[dep] for dep in spec.after}
                stages[name] = StepStage(
                    spec, workflow=wf, hooks=chain, deps=deps, slot=slots[name]
                )
                continue
            slot = slots.get(name)
            outlet = Outlet(senders[name], [] if slot is not None else None)
            if isinstance(spec, StreamTask):
                fed = receivers[name].get(spec.upstream)
                source = slots.get(spec.upstream) if fed is None else fed
                if spec.batch_size is not None:
                    assert source is not None, "a batched stream is never fused"
                    stages[name] = BatchedStreamStage(
                        spec, workflow=wf, hooks=chain, source=source, outlet=outlet, slot=slot
                    )
                    continue
                stages[name] = StreamStage(
                    spec, workflow=wf, hooks=chain, source=source, outlet=outlet, slot=slot
                )
            else:
                sources = [receivers[name].get(dep) for dep in spec.after]
                stages[name] = JoinStage(
                    spec, workflow=wf, hooks=chain, sources=sources, outlet=outlet, slot=slot
                )
        ports = {
            (name, index): port
            for name, stage in stages.items()
            if isinstance(stage, JoinStage)
            for index, port in enumerate(stage.ports)
        }
        for name, stage in stages.items():
            if isinstance(stage, ItemStage):
                stage.reaches = [ports[edge] for edge in plan.joins_reached(name)]
            target = fused.get(name)
            if target is None:
                continue
            assert isinstance(stage, StreamStage | JoinStage)
            consumer = stages[target]
            if isinstance(consumer, JoinStage):
                stage.connect(consumer.ports[tasks[target].after.index(name)])
            else:
                assert isinstance(consumer, StreamStage)
                stage.connect(consumer)
        for (name, index), port in ports.items():
            port.carriers = plan.carriers(name, index)
        return slots, stages

    def _slots(self, downstream: Mapping[str, list[str]]) -> dict[str, Slot]:
        """Return a slot for each whole result the run needs to hold."""
        # every step result; a stream's items only when a step consumes them or they
        # are collected as a run result, so that a long stream is not kept in memory for nothing
        tasks = self._tasks
        slots: dict[str, Slot] = {}
        for name, spec in tasks.items():
            users = downstream[name]
            step_user = any(isinstance(tasks[user], StepTask) for user in users)
            if isinstance(spec, StepTask) or step_user or (not users and spec.collect):
                slots[name] = Slot()
        return slots

    def _edges(
        self, fused: Mapping[str, str]
    ) -> tuple[dict[str, list[Sender]], dict[str, dict[str, Receiver]]]:
        """Create one bounded channel per edge into a stream or join that is not fused."""
        tasks = self._tasks
        senders: dict[str, list[Sender]] = {name: [] for name in tasks}
        receivers: dict[str, dict[str, Receiver]] = {name: {} for name in tasks}
        for name, spec in tasks.items():
            if isinstance(spec, StepTask):
                continue
            for dep in spec.after:
                # a stream fed by a step iterates its result: no channel needed
                if not isinstance(tasks[dep], StepTask) and fused.get(dep) != name:
                    tx, rx = channel(self._channel_size)
                    self._channels += (tx, rx)
                    senders[dep].append(tx)
                    receivers[name][dep] = rx
        return senders, receivers


def _never_waits(spec: TaskSpec) -> bool:
    """Whether a task only computes: a join, or a stream of one item at a time whose function
    never awaits. Only such a task is fused after the one before it: the carriers that run it
    are free again at once, so fusing it cannot hold back the tasks they come from."""
    if isinstance(spec, StreamTask):
        return spec.batch_size is None and not is_async(spec.fn) and spec.policy.plain
    return isinstance(spec, JoinTask)


def _one_at_a_time(spec: TaskSpec) -> bool:
    """Whether a task takes and gives items one at a time: a stream without a batch size, or a
    join. Only between two such tasks is an edge fused."""
    if isinstance(spec, StreamTask):
        return spec.batch_size is None
    return isinstance(spec, JoinTask)


class _Carriers:
    """Which coroutines may deliver to each input of a join, through fused edges.

    A stream fed by a step's result or a channel has ``concurrency`` workers and a join one
    reader per channel; each may carry its items on through the fused edges after it. A join
    holding back an upstream needs to know whether that upstream's carriers are all waiting.
    """

    def __init__(self, tasks: Mapping[str, TaskSpec], fused: Mapping[str, str]) -> None:
        self._tasks = tasks
        self._fused = fused
        self._ports: dict[tuple[str, int], int] = {}
        fed_by_inlet = set(fused.values())
        for name, spec in tasks.items():
            if isinstance(spec, StreamTask) and spec.batch_size is None:
                if name not in fed_by_inlet:
                    self._carry(name, spec.concurrency)
            elif isinstance(spec, JoinTask):
                channels = [dep for dep in spec.after if fused.get(dep) != name]
                for dep in channels:
                    self._ports[(name, spec.after.index(dep))] = 1
                self._carry(name, len(channels))

    def carriers(self, join: str, index: int) -> int:
        """The coroutines that may deliver to a join from its upstream ``index``."""
        return self._ports.get((join, index), 0)

    def joins_reached(self, name: str) -> list[tuple[str, int]]:
        """The join inputs a coroutine starting at ``name`` may deliver to."""
        reached = []
        while name in self._fused:
            after = self._fused[name]
            spec = self._tasks[after]
            if isinstance(spec, JoinTask):
                reached.append((after, spec.after.index(name)))
            name = after
        return reached

    def _carry(self, start: str, count: int) -> None:
        for edge in self.joins_reached(start):
            self._ports[edge] = self._ports.get(edge, 0) + count


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
