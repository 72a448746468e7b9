"""Batched streams: a stream task whose fn takes a list of items and returns their results.

Not a step (``StepStage``, called once with whole results): a batched stream gathers
up to ``batch_size`` items of its upstream, hands them to fn when the batch is full, when
``linger_s`` passed since its first item arrived, or at end of stream, and emits result i
under the key of item i. Hooks still see items, one by one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial
from time import perf_counter
from typing import Any

import anyio
from anyio import EndOfStream, WouldBlock
from anyio.lowlevel import checkpoint

from offerflow.engine.channels import Item, Outlet, Receiver, Slot
from offerflow.engine.failures import Failure, ItemError
from offerflow.engine.hooks import HookChain
from offerflow.engine.policy import call_with_policy
from offerflow.engine.stages import YIELD_EVERY, ItemStage, StageFailed, Worker, itemize
from offerflow.engine.tasks import StreamTask, is_async


class BatchedStreamStage(ItemStage):
    """Runs a stream task with a batch size: ``concurrency`` workers, one batch each in flight.

    One worker at a time gathers a batch (a lock), so batches fill one after the other instead
    of sharing the arrivals among idle workers; the others meanwhile run their own batch. Its
    items always leave on channels: a fused task after it would run a batch's items one after
    the other. The last worker to finish ends the task.
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
        if spec.batch_size is None or outlet.inlet is not None:
            raise ValueError(f"stream task {spec.name!r} is not a batched stream on channels")
        super().__init__(spec.name, workflow=workflow, hooks=hooks, outlet=outlet, slot=slot)
        self._spec = spec
        self._fn = spec.fn
        self._async = is_async(spec.fn)
        self._plain = spec.policy.plain
        self._fatal = spec.policy.fatal
        self._accepts_failures = spec.accepts_failures
        self._source = source
        self._items: Iterator[Item] | None = None
        self._live = spec.concurrency
        self._size = spec.batch_size
        self._linger = spec.linger_s
        self._gathering = anyio.Lock()
        self._ended = False

    def workers(self) -> list[Worker]:
        """Return one worker coroutine per batch in flight."""
        return [self._work] * self._spec.concurrency

    async def _work(self) -> None:
        try:
            if isinstance(self._source, Slot):
                await self._work_on_result(self._source)
            else:
                await self._work_on_channel(self._source)
        except StageFailed:
            raise
        except Exception as exc:
            raise StageFailed(self.name, exc) from exc
        self._live -= 1
        if self._live == 0:
            self._finish()

    async def _work_on_result(self, source: Slot) -> None:
        result = await source.wait()
        if self._items is None:
            # the workers share one iterator: next() never awaits, so each item goes to one
            self._items = itemize(result, self._spec.key)
            self._start()
        unyielded = 0
        while batch := await self._take(self._items):
            await self._process(batch)
            unyielded += len(batch)
            if unyielded >= YIELD_EVERY:
                unyielded = 0
                await checkpoint()

    async def _take(self, items: Iterator[Item]) -> list[Item]:
        """Return the next batch of a step's result's items; empty once they are all taken."""
        batch: list[Item] = []
        for item in items:
            if not self._accepts_failures and isinstance(item[1], Failure):
                await self._outlet.emit(*item)
                continue
            batch.append(item)
            if len(batch) == self._size:
                break
        return batch

    async def _work_on_channel(self, rx: Receiver) -> None:
        gathering = self._gathering
        while not self._ended:
            # acquire() would yield on every batch; only wait while another worker gathers
            try:
                gathering.acquire_nowait()
            except WouldBlock:
                await gathering.acquire()
            try:
                batch = await self._gather(rx)
            finally:
                gathering.release()
            if batch:
                await self._process(batch)

    async def _gather(self, rx: Receiver) -> list[Item]:
        """Receive the next batch: full, lingered out or the last one; empty at end of stream."""
        batch: list[Item] = []
        size, bypass = self._size, not self._accepts_failures
        deadline = math.inf
        try:
            while len(batch) < size:
                try:
                    item = rx.receive_nowait()
                except WouldBlock:
                    if not batch:
                        item = await rx.receive()
                    elif anyio.current_time() >= deadline:
                        break
                    else:
                        # an open batch and an empty buffer: wait, but only until the deadline
                        forward = await self._fill(rx, batch, deadline)
                        if forward is None:
                            break
                        item = forward
                if bypass and isinstance(item[1], Failure):
                    self._start()
                    await self._outlet.emit(*item)
                    continue
                if not batch:
                    self._start()
                    deadline = anyio.current_time() + self._linger
                batch.append(item)
        except EndOfStream:
            self._ended = True
        return batch

    async def _fill(self, rx: Receiver, batch: list[Item], deadline: float) -> Item | None:
        """Receive into ``batch`` until it is full or ``deadline`` passed.

        Returns an upstream Failure to forward instead, if one comes: it is sent outside the
        deadline's scope, which must not cancel a send half-way.
        """
        # one scope and timer per batch, and only for a batch that had to wait
        with anyio.CancelScope(deadline=deadline):
            while len(batch) < self._size:
                try:
                    item = rx.receive_nowait()
                except WouldBlock:
                    item = await rx.receive()
                if not self._accepts_failures and isinstance(item[1], Failure):
                    return item
                batch.append(item)
        return None

    async def _process(self, batch: list[Item]) -> None:
        hooks, observe, name = self._hooks, self._hooks.items, self.name
        if observe:
            for key, _ in batch:
                hooks.on_item_start(task=name, key=key)
        t0 = perf_counter()
        values = [value for _, value in batch]
        results: Any
        error: BaseException | None
        if self._plain:
            attempts = 1
            try:
                results, error = (await self._call(values)), None
            except Exception as exc:
                results, error = None, exc
        else:
            results, error, attempts = await call_with_policy(
                self._spec.policy, partial(self._call, values), partial(self._on_retry, batch)
            )
        latency = perf_counter() - t0
        if error is None:
            error = self._mismatch(results, len(batch))
            if error is not None:
                # a bug in fn, not a property of these items: fail the task
                self._report_failed(batch, error, latency)
                raise error
            await self._emit(batch, results, attempts, latency)
            return
        self._report_failed(batch, error, latency)
        if self._fatal(error):
            raise error
        await self._outlet.emit_all(
            [(key, Failure(key, name, error, value, attempts)) for key, value in batch]
        )

    async def _call(self, values: list[Any]) -> Any:
        return (await self._fn(values)) if self._async else self._fn(values)

    def _mismatch(self, results: Any, size: int) -> Exception | None:
        """Return the error of a result that is not one result per item, else None."""
        if isinstance(results, str | bytes) or not isinstance(results, Sequence):
            return TypeError(
                f"batched stream task {self.name!r}: fn must return a sequence of {size} "
                f"results, one per item, got {type(results).__name__}"
            )
        if len(results) != size:
            return ValueError(
                f"batched stream task {self.name!r}: fn returned {len(results)} results "
                f"for a batch of {size} items"
            )
        return None

    async def _emit(
        self, batch: list[Item], results: Sequence[Any], attempts: int, latency: float
    ) -> None:
        hooks, observe, name, fatal = self._hooks, self._hooks.items, self.name, self._fatal
        items: list[Item] = []
        for (key, value), out in zip(batch, results, strict=True):
            if isinstance(out, ItemError):
                error = out.error
                if observe:
                    hooks.on_item_failed(task=name, key=key, error=error, latency=latency)
                if fatal(error):
                    raise error
                out = Failure(key, name, error, value, attempts)
            elif observe:
                hooks.on_item_done(task=name, key=key, latency=latency)
            items.append((key, out))
        await self._outlet.emit_all(items)

    def _report_failed(self, batch: list[Item], error: BaseException, latency: float) -> None:
        hooks, name = self._hooks, self.name
        if hooks.items:
            for key, _ in batch:
                hooks.on_item_failed(task=name, key=key, error=error, latency=latency)

    def _on_retry(
        self, batch: list[Item], attempt: int, error: BaseException, delay: float
    ) -> None:
        # a retry of the batch is a retry of each of its items
        hooks, name = self._hooks, self.name
        for key, _ in batch:
            hooks.on_retry(task=name, key=key, attempt=attempt, error=error, delay=delay)
