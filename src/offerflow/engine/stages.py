"""Stages: the coroutines that execute steps, stream and join tasks inside a run.

A stage is the running form of a task spec. The runner wires its inputs (slots for whole
results, channels for items) and its outlet, then starts each coroutine ``workers()`` returns
in the run's one task group. The last worker of a stage to finish closes its outlet, which is
end of stream for every consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import islice
from time import perf_counter
from types import MappingProxyType
from typing import Any

import anyio
from anyio import EndOfStream
from anyio.lowlevel import checkpoint

from offerflow.engine.channels import Item, Outlet, Receiver, Slot, receive
from offerflow.engine.failures import Failure
from offerflow.engine.hooks import HookChain
from offerflow.engine.policy import call_with_policy
from offerflow.engine.tasks import JoinTask, StepTask, StreamTask, is_async

logger = logging.getLogger(__name__)

Worker = Callable[[], Awaitable[None]]

# A stream fed by a step's result never has to wait for input, so it yields to the event loop
# every this many items: lets the other tasks run and a cancellation in.
YIELD_EVERY = 64
# How many missing keys a join's error names.
_KEYS_NAMED = 5
_MISSING: Any = object()


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
    """A stage that emits items: it owns an outlet and maybe a slot for its collected items."""

    def __init__(
        self, name: str, *, workflow: str, hooks: HookChain, outlet: Outlet, slot: Slot | None
    ) -> None:
        super().__init__(name, workflow=workflow, hooks=hooks)
        self._outlet = outlet
        self._slot = slot

    def _finish(self) -> None:
        self._outlet.close()
        if self._slot is not None:
            self._slot.set(self._outlet.collected)
        super()._finish()


class WorkerStage(ItemStage):
    """A stream task's stage: ``concurrency`` long-lived workers on one source, items or a result.

    Subclasses say how a worker takes its work from a step's result and from a channel; the last
    worker to finish closes the outlet.
    """

    def __init__(
        self,
        spec: StreamTask,
        *,
        workflow: str,
        hooks: HookChain,
        source: Slot | Receiver,
        outlet: Outlet,
        slot: Slot | None,
    ) -> None:
        super().__init__(spec.name, workflow=workflow, hooks=hooks, outlet=outlet, slot=slot)
        self._spec = spec
        self._fn = spec.fn
        self._async = is_async(spec.fn)
        self._plain = spec.policy.plain
        self._fatal = spec.policy.fatal
        self._source = source
        self._items: Iterator[Item] | None = None
        self._live = spec.concurrency
        self._accepts_failures = spec.accepts_failures
        self._fast = self._plain and not hooks.items

    def workers(self) -> list[Worker]:
        """Return one worker coroutine per unit of concurrency."""
        return [self._work] * self._spec.concurrency

    async def _work(self) -> None:
        if isinstance(self._source, Slot):
            await self._work_on_result(self._source)
        else:
            await self._work_on_channel(self._source)
        self._live -= 1
        if self._live == 0:
            self._finish()

    async def _work_on_result(self, source: Slot) -> None:
        raise NotImplementedError

    async def _work_on_channel(self, rx: Receiver) -> None:
        raise NotImplementedError


class StreamStage(WorkerStage):
    """Runs a stream task: ``concurrency`` long-lived workers pulling items from one source."""

    async def _work_on_result(self, source: Slot) -> None:
        result = await source.wait()
        if self._items is None:
            # the workers share one iterator: next() never awaits, so each item goes to one
            self._items = itemize(result, self._spec.key)
            self._start()
        outlet = self._outlet
        for count, (key, value) in enumerate(self._items, 1):
            await outlet.emit(key, await self._process(key, value))
            if count % YIELD_EVERY == 0:
                await checkpoint()

    async def _work_on_channel(self, rx: Receiver) -> None:
        outlet = self._outlet
        while True:
            try:
                key, value = await receive(rx)
            except EndOfStream:
                return
            if not self._started:
                self._start()
            await outlet.emit(key, await self._process(key, value))

    async def _process(self, key: Hashable, value: Any) -> Any:
        # The hot path of every item: one coroutine around the task's function, no more.
        if not self._accepts_failures and isinstance(value, Failure):
            return value
        if self._fast:
            try:
                return (await self._fn(value)) if self._async else self._fn(value)
            except Exception as exc:
                if self._fatal(exc):
                    raise
                return Failure(key, self.name, exc, value)
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


class _Pending:
    """A key some but not all upstreams of a join have delivered."""

    __slots__ = ("arrived", "first", "since", "values")

    def __init__(self, width: int, since: float, first: int) -> None:
        self.arrived = 0
        self.since = since
        self.first = first  # the upstream that delivered the key first: it leads by this key
        self.values: list[Any] = [_MISSING] * width


class JoinStage(ItemStage):
    """Runs a join: one reader per upstream, emitting each key once every upstream has it.

    With the task's ``max_lead``, an upstream that leads the others by ``max_lead`` keys (keys it
    delivered first that are not complete yet) is not read until its lead is down to half:
    it waits on its full channel meanwhile. A reader never waits while every other reader
    waits (keys in a different order on each upstream could otherwise deadlock the join).
    """

    def __init__(
        self,
        spec: JoinTask,
        *,
        workflow: str,
        hooks: HookChain,
        sources: Sequence[Receiver],
        outlet: Outlet,
        slot: Slot | None,
    ) -> None:
        super().__init__(spec.name, workflow=workflow, hooks=hooks, outlet=outlet, slot=slot)
        self._names = spec.after
        self._sources = tuple(sources)
        self._pending: dict[Hashable, _Pending] = {}
        self._open = len(self._sources)
        self._max_lead = spec.max_lead
        self._resume_at = -1 if spec.max_lead is None else spec.max_lead // 2
        self._lead = [0] * len(self._sources)  # per upstream: pending keys it delivered first
        self._held = 0  # readers waiting for the others to catch up
        self._caught_up = anyio.Event()

    def workers(self) -> list[Worker]:
        """Return one reader per upstream, so no upstream waits for another."""
        return [partial(self._read, index, rx) for index, rx in enumerate(self._sources)]

    async def _read(self, index: int, rx: Receiver) -> None:
        pending, width, observe = self._pending, len(self._names), self._hooks.items
        lead, max_lead, resume_at = self._lead, self._max_lead, self._resume_at
        while True:
            if max_lead is not None and lead[index] >= max_lead:
                await self._wait_for_the_others(index)
            try:
                key, value = await receive(rx)
            except EndOfStream:
                break
            if not self._started:
                self._start()
            entry = pending.get(key)
            if entry is None:
                if observe:
                    self._hooks.on_item_start(task=self.name, key=key)
                entry = pending[key] = _Pending(width, perf_counter() if observe else 0.0, index)
                lead[index] += 1
            elif entry.values[index] is not _MISSING:
                raise ValueError(
                    f"join {self.name!r}: upstream {self._names[index]!r} delivered key {key!r} "
                    "twice; keys must be unique per upstream"
                )
            entry.values[index] = value
            entry.arrived += 1
            if entry.arrived == width:
                # free the entry as soon as the key is complete: memory stays bounded by skew
                del pending[key]
                lead[entry.first] -= 1
                if self._held and lead[entry.first] == resume_at:
                    self._wake()
                await self._outlet.emit(key, self._combine(key, entry))
        self._open -= 1
        if self._held:
            self._wake()  # one reader fewer: a waiting one may now be the last one reading
        if self._open == 0:
            if pending:
                raise LookupError(self._missing())
            self._finish()

    async def _wait_for_the_others(self, index: int) -> None:
        """Wait while this upstream leads by more than half ``max_lead`` keys and another
        reader is reading."""
        while self._lead[index] > self._resume_at and self._held + 1 < self._open:
            caught_up = self._caught_up
            self._held += 1
            try:
                await caught_up.wait()
            finally:
                self._held -= 1

    def _wake(self) -> None:
        """Wake the waiting readers to look again; later waits wait for the next change."""
        self._caught_up.set()
        self._caught_up = anyio.Event()

    def _combine(self, key: Hashable, entry: _Pending) -> Any:
        names, values = self._names, entry.values
        failed: Failure | None = None
        for value in values:
            if isinstance(value, Failure):
                failed = value
                break
        hooks = self._hooks
        if failed is None:
            if hooks.items:
                hooks.on_item_done(task=self.name, key=key, latency=perf_counter() - entry.since)
            return dict(zip(names, values, strict=True))
        if hooks.items:
            latency = perf_counter() - entry.since
            hooks.on_item_failed(task=self.name, key=key, error=failed.error, latency=latency)
        partial_values = {
            name: value
            for name, value in zip(names, values, strict=True)
            if not isinstance(value, Failure)
        }
        return Failure(
            key,
            failed.task,
            failed.error,
            failed.value,
            failed.attempts,
            MappingProxyType(partial_values),
        )

    def _missing(self) -> str:
        named = []
        for key, entry in islice(self._pending.items(), _KEYS_NAMED):
            absent = [n for n, v in zip(self._names, entry.values, strict=True) if v is _MISSING]
            named.append(f"{key!r} (missing from {', '.join(map(repr, absent))})")
        more = len(self._pending) - len(named)
        return (
            f"join {self.name!r}: {len(self._pending)} keys did not arrive from every upstream: "
            + ", ".join(named)
            + (f" and {more} more" if more else "")
        )
