"""Stages: the running form of steps and stream tasks (joins and batched streams have modules
of their own).

A stage is the running form of a task spec. The runner wires its input (a slot for a whole
result, a channel, or an inlet that the stage before it pushes into) and its outlet, then starts
each coroutine ``workers()`` returns in the run's one task group. A stage fed through an inlet
has no workers: the coroutines that deliver its items (its **carriers**) run its processing.

A stage ends (its task-end event, then the end of its outlet) once its input has ended and no
item it took is still in flight, so that the tasks of a fused chain end one after the other,
each when its own last item is done, exactly as they would with channels between them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from time import perf_counter
from typing import Any

import anyio
from anyio import EndOfStream
from anyio.lowlevel import checkpoint

from offerflow.engine.channels import Inlet, Item, Outlet, Receiver, Slot, receive
from offerflow.engine.failures import Failure
from offerflow.engine.hooks import HookChain
from offerflow.engine.policy import call_with_policy
from offerflow.engine.tasks import StepTask, StreamTask, is_async

logger = logging.getLogger(__name__)

Worker = Callable[[], Awaitable[None]]

# A stream fed by a step's result never has to wait for input, so it yields to the event loop
# every this many items: lets the other tasks run and a cancellation in.
YIELD_EVERY = 64


class StageFailed(Exception):
    """Raised inside a run when a task fails as a whole: carries the task, whichever coroutine
    (its own worker, or a carrier from upstream) was running it."""

    def __init__(self, task: str, cause: Exception) -> None:
        super().__init__(task, cause)
        self.task = task
        self.cause = cause


def itemize(result: Iterable[Any], key: Callable[[Any], Hashable] | None) -> Iterator[Item]:
    """Return the items of a step's result: keyed by ``key(element)``, or by index."""
    if key is None:
        return enumerate(result)
    return ((key(element), element) for element in result)


class Stage:
    """What every stage shares: its name, its hooks, and the task start/end events."""

    def __init__(self, name: str, *, workflow: str, hooks: HookChain) -> None:
        self.name = name
        self._workflow = workflow
        self._hooks = hooks
        self._started = False
        self._t0 = 0.0

    def workers(self) -> list[Worker]:
        """Return the coroutine functions to start in the run's task group."""
        raise NotImplementedError

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._t0 = perf_counter()
            logger.debug("workflow %r: task %r started", self._workflow, self.name)
            self._hooks.on_task_start(task=self.name)

    def _finish(self) -> None:
        # a stream whose upstream produced nothing still starts before it ends
        self._start()
        logger.debug(
            "workflow %r: task %r finished in %.3f s",
            self._workflow,
            self.name,
            perf_counter() - self._t0,
        )
        self._hooks.on_task_end(task=self.name, error=None)


class StepStage(Stage):
    """Runs a step once its dependencies' results are ready."""

    def __init__(
        self,
        spec: StepTask,
        *,
        workflow: str,
        hooks: HookChain,
        deps: Mapping[str, Slot],
        slot: Slot,
    ) -> None:
        super().__init__(spec.name, workflow=workflow, hooks=hooks)
        self._spec = spec
        self._async = is_async(spec.fn)
        # A worker thread cannot be interrupted. Waiting for it on cancellation keeps threads
        # from outliving the run; only a policy deadline justifies abandoning it instead.
        policy = spec.policy
        self._abandon = policy.attempt_timeout is not None or policy.item_timeout is not None
        self._deps = deps
        self._slot = slot

    def workers(self) -> list[Worker]:
        """Return the one coroutine of a step."""
        return [self._run]

    async def _run(self) -> None:
        kwargs = {name: await dep.wait() for name, dep in self._deps.items()}
        self._start()
        hooks, observe = self._hooks, self._hooks.items
        if observe:
            hooks.on_item_start(task=self.name, key=None)
        t0 = perf_counter()
        value, error, _ = await call_with_policy(
            self._spec.policy, partial(self._call, kwargs), self._on_retry
        )
        if error is not None:
            if observe:
                hooks.on_item_failed(
                    task=self.name, key=None, error=error, latency=perf_counter() - t0
                )
            raise error
        if observe:
            hooks.on_item_done(task=self.name, key=None, latency=perf_counter() - t0)
        self._slot.set(value)
        self._finish()

    async def _call(self, kwargs: dict[str, Any]) -> Any:
        fn = self._spec.fn
        if self._async:
            return await fn(**kwargs)
        return await anyio.to_thread.run_sync(
            partial(fn, **kwargs), abandon_on_cancel=self._abandon
        )

    def _on_retry(self, attempt: int, error: BaseException, delay: float) -> None:
        self._hooks.on_retry(task=self.name, key=None, attempt=attempt, error=error, delay=delay)


class ItemStage(Stage):
    """A stage that emits items: it owns an outlet and maybe a slot for its collected items.

    ``reaches`` are the inlets of joins its workers may deliver to through fused edges: a join
    needs to know when one of them exits (see :mod:`~offerflow.engine.joins`).
    """

    def __init__(
        self, name: str, *, workflow: str, hooks: HookChain, outlet: Outlet, slot: Slot | None
    ) -> None:
        super().__init__(name, workflow=workflow, hooks=hooks)
        self._outlet = outlet
        self._slot = slot
        self.reaches: Sequence[Inlet] = ()

    def _finish(self) -> None:
        # the task's own end first: closing a fused outlet may end the tasks after it at once
        super()._finish()
        if self._slot is not None:
            self._slot.set(self._outlet.collected)
        self._outlet.close()

    def connect(self, inlet: Inlet) -> None:
        """Fuse this task's only outgoing edge: its items go to ``inlet``."""
        self._outlet.inlet = inlet

    def _carrier_exits(self) -> None:
        for inlet in self.reaches:
            inlet.carrier_gone()


class StreamStage(ItemStage):
    """Runs a stream task: each item through the task's function, ``concurrency`` at a time.

    Fed by a step's result or a channel, it has ``concurrency`` workers of its own, each taking
    an item, processing it and carrying it on. Fed through its inlet (a fused edge: the runner
    fuses only into a task whose function never awaits), it has none: the carriers of the task
    before it run it, and as it never awaits, no two of them are ever inside it at once.
    """

    def __init__(
        self,
        spec: StreamTask,
        *,
        workflow: str,
        hooks: HookChain,
        source: Slot | Receiver | None,
        outlet: Outlet,
        slot: Slot | None,
    ) -> None:
        super().__init__(spec.name, workflow=workflow, hooks=hooks, outlet=outlet, slot=slot)
        self._spec = spec
        self._fn = spec.fn
        self._async = is_async(spec.fn)
        self._plain = spec.policy.plain
        self._fatal = spec.policy.fatal
        self._accepts_failures = spec.accepts_failures
        self._source = source
        self._workers = 0 if source is None else spec.concurrency
        self._reading = self._workers  # workers that have not seen the end of a channel yet
        self._items: Iterator[Item] | None = None
        self._inbound = 0  # items taken and not yet let go of
        self._input_open = True
        self._ended = False

    # -- lifecycle --------------------------------------------------------------------------

    def workers(self) -> list[Worker]:
        """Return one worker per unit of concurrency (none when fed through its inlet)."""
        return [self._work] * self._workers

    def enter(self) -> None:
        """Count an item delivered through the inlet as in flight."""
        self._inbound += 1

    def input_ended(self) -> None:
        """The input ended: the stage ends when its last item is done."""
        if self._input_open:
            self._input_open = False
            if not self._inbound:
                self._end()

    def carrier_gone(self) -> None:
        """Nothing to do: a stream task waits for no carrier."""

    def _leave(self) -> None:
        self._inbound -= 1
        if not self._inbound and not self._input_open:
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._finish()
        except StageFailed:
            raise
        except Exception as exc:  # a hook failed
            raise StageFailed(self.name, exc) from exc

    # -- the workers of a stage fed by a result or a channel --------------------------------

    async def _work(self) -> None:
        if isinstance(self._source, Slot):
            await self._work_on_result(self._source)
        else:
            assert self._source is not None
            await self._work_on_channel(self._source)
        self._carrier_exits()

    async def _work_on_result(self, source: Slot) -> None:
        result = await source.wait()
        if self._items is None:
            # the workers share one iterator: next() never awaits, so each item goes to one
            self._items = itemize(result, self._spec.key)
            self._start()
        for count, (key, value) in enumerate(self._items, 1):
            self._inbound += 1
            await self.push(key, value)
            if count % YIELD_EVERY == 0:
                await checkpoint()
        self.input_ended()

    async def _work_on_channel(self, rx: Receiver) -> None:
        while True:
            try:
                key, value = await receive(rx)
            except EndOfStream:
                break
            if not self._started:
                self._start()
            self._inbound += 1
            await self.push(key, value)
        # Not the first worker to see the end: another may have been handed the last item and
        # not yet have run to count it in.
        self._reading -= 1
        if not self._reading:
            self.input_ended()

    # -- one item ---------------------------------------------------------------------------

    async def push(self, key: Hashable, value: Any) -> None:
        """Process one entered item and pass it on (also the inlet of a fused edge).

        Failures from upstream pass by untouched, not as items of this task, unless it accepts
        them.
        """
        if not self._started:
            self._start()
        if self._accepts_failures or not isinstance(value, Failure):
            try:
                value = await self._process(key, value)
            except Exception as exc:
                raise StageFailed(self.name, exc) from exc
        inlet = self._outlet.inlet
        if inlet is not None:
            inlet.enter()  # in flight there before it is let go of here
            self._inbound -= 1
            if not self._inbound and not self._input_open:
                self._end()
            await inlet.push(key, value)
        else:
            await self._outlet.emit(key, value)
            self._leave()

    async def _process(self, key: Hashable, value: Any) -> Any:
        """The item's value out of the task's function, or a Failure; raise a fatal error."""
        hooks, observe = self._hooks, self._hooks.items
        if observe:
            hooks.on_item_start(task=self.name, key=key)
            t0 = perf_counter()
        error: BaseException | None
        if self._plain:
            # the common case needs none of the policy machinery
            attempts = 1
            try:
                out = (await self._fn(value)) if self._async else self._fn(value)
                error = None
            except Exception as exc:
                out, error = None, exc
        else:
            out, error, attempts = await call_with_policy(
                self._spec.policy, partial(self._call, value), partial(self._on_retry, key)
            )
        if error is None:
            if observe:
                hooks.on_item_done(task=self.name, key=key, latency=perf_counter() - t0)
            return out
        if observe:
            hooks.on_item_failed(task=self.name, key=key, error=error, latency=perf_counter() - t0)
        if self._fatal(error):
            raise error
        return Failure(key, self.name, error, value, attempts)

    async def _call(self, value: Any) -> Any:
        return (await self._fn(value)) if self._async else self._fn(value)

    def _on_retry(self, key: Hashable, attempt: int, error: BaseException, delay: float) -> None:
        self._hooks.on_retry(task=self.name, key=key, attempt=attempt, error=error, delay=delay)
