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
from offerflow.engine.graph import consumers
from offerflow.engine.hooks import Hook, HookChain
from offerflow.engine.metrics import MetricsHook, TaskMetrics
from offerflow.engine.stages import JoinStage, Stage, StepStage, StreamStage
from offerflow.engine.tasks import StepTask, StreamTask, TaskSpec
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
            # the first failure wins; later ones are echoes of the cancellation it caused
            if self._failure is None:
                self._failure = (task, exc)
                logger.info("workflow %r: task %r failed: %r", self._workflow, task, exc)
                self._cancel.cancel()

    def _wire(self) -> tuple[dict[str, Slot], dict[str, Stage]]:
        """Create every slot, channel and stage of the run."""
        slots = self._slots()
        senders, receivers = self._edges()
        wf, chain = self._workflow, self._chain
        stages: dict[str, Stage] = {}
        for name, spec in self._tasks.items():
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
                source = slots[spec.upstream] if fed is None else fed
                stage: type[StreamStage | BatchedStreamStage] = (
                    StreamStage if spec.batch_size is None else BatchedStreamStage
                )
                stages[name] = stage(
                    spec, workflow=wf, hooks=chain, source=source, outlet=outlet, slot=slot
                )
            else:
                sources = [receivers[name][dep] for dep in spec.after]
                stages[name] = JoinStage(
                    spec, workflow=wf, hooks=chain, sources=sources, outlet=outlet, slot=slot
                )
        return slots, stages

    def _slots(self) -> dict[str, Slot]:
        """Return a slot for each whole result the run needs to hold."""
        # every step result; a stream's items only when a step consumes them or they
        # are collected as a run result, so that a long stream is not kept in memory for nothing
        tasks, downstream = self._tasks, consumers(self._tasks)
        slots: dict[str, Slot] = {}
        for name, spec in tasks.items():
            users = downstream[name]
            step_user = any(isinstance(tasks[user], StepTask) for user in users)
            if isinstance(spec, StepTask) or step_user or (not users and spec.collect):
                slots[name] = Slot()
        return slots

    def _edges(self) -> tuple[dict[str, list[Sender]], dict[str, dict[str, Receiver]]]:
        """Create one bounded channel per edge into a stream or join task."""
        tasks = self._tasks
        senders: dict[str, list[Sender]] = {name: [] for name in tasks}
        receivers: dict[str, dict[str, Receiver]] = {name: {} for name in tasks}
        for name, spec in tasks.items():
            if isinstance(spec, StepTask):
                continue
            for dep in spec.after:
                # a stream fed by a step iterates its result: no channel needed
                if not isinstance(tasks[dep], StepTask):
                    tx, rx = channel(self._channel_size)
                    self._channels += (tx, rx)
                    senders[dep].append(tx)
                    receivers[name][dep] = rx
        return senders, receivers


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
