"""Joins: the items of several upstream streams combined by key.

A join emits each key once every upstream has delivered it. Its upstreams deliver through its
ports: a fused upstream's own carriers push into its port, and an upstream that fans out or
works in batches sends on a channel that a reader of the join takes from. Whoever delivers the
last missing value of a key carries the combined item on.

With the task's ``max_lead``, an upstream that leads the others by ``max_lead`` keys (keys it
delivered first that are not complete yet) holds back its next new key until its lead is down
to half. A carrier never waits while no other open upstream has a carrier that is not waiting
itself: keys in a different order on each upstream could otherwise deadlock the join.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from itertools import islice
from time import perf_counter
from types import MappingProxyType
from typing import Any

import anyio
from anyio import EndOfStream

from offerflow.engine.channels import Outlet, Receiver, Slot, receive
from offerflow.engine.failures import Failure
from offerflow.engine.hooks import HookChain
from offerflow.engine.stages import ItemStage, StageFailed, Worker
from offerflow.engine.tasks import JoinTask

# How many missing keys a join's error names.
_KEYS_NAMED = 5
_MISSING: Any = object()


class _Pending:
    """A key some but not all upstreams of a join have delivered."""

    __slots__ = ("arrived", "first", "since", "values")

    def __init__(self, width: int, since: float, first: int) -> None:
        self.arrived = 0
        self.since = since
        self.first = first  # the upstream that delivered the key first: it leads by this key
        self.values: list[Any] = [_MISSING] * width


class Port:
    """One upstream's way into a join: an inlet for a fused upstream, or for its readers."""

    __slots__ = ("_index", "_join", "carriers", "push")

    def __init__(self, join: JoinStage, index: int) -> None:
        self._join = join
        self._index = index
        #: the coroutines alive that may still deliver here
        self.carriers = 0
        #: ``await push(key, value)`` delivers an entered item of this upstream (the join's own
        #: method, bound to this upstream: no call in between, it runs once per item)
        self.push: Callable[[Hashable, Any], Awaitable[None]] = partial(join.deliver, index)

    def enter(self) -> None:
        """Count an item as arriving."""
        self._join.inbound += 1

    def input_ended(self) -> None:
        """This upstream has delivered everything."""
        self._join.upstream_ended(self._index)

    def carrier_gone(self) -> None:
        """One coroutine that could deliver here has exited."""
        self.carriers -= 1
        self._join.wake_if_held()


class JoinStage(ItemStage):
    """Runs a join: combines per key the values of its upstreams, in the order they complete.

    ``sources`` holds, per upstream, the channel its reader takes from, or None for a fused
    upstream.
    """

    def __init__(
        self,
        spec: JoinTask,
        *,
        workflow: str,
        hooks: HookChain,
        sources: Sequence[Receiver | None],
        outlet: Outlet,
        slot: Slot | None,
    ) -> None:
        super().__init__(spec.name, workflow=workflow, hooks=hooks, outlet=outlet, slot=slot)
        self._names = spec.after
        self._sources = tuple(sources)
        self.ports = tuple(Port(self, index) for index in range(len(sources)))
        self.inbound = 0  # items arrived and not yet let go of (held as pending, or carried on)
        self._pending: dict[Hashable, _Pending] = {}
        self._open = [True] * len(self._names)
        self._ended = False
        self._max_lead = spec.max_lead
        self._resume_at = -1 if spec.max_lead is None else spec.max_lead // 2
        self._lead = [0] * len(self._names)  # per upstream: pending keys it delivered first
        self._held = [0] * len(self._names)  # per upstream: carriers waiting to deliver
        self._holding = 0
        self._caught_up = anyio.Event()

    def workers(self) -> list[Worker]:
        """Return the readers of every upstream that sends on a channel."""
        return [
            partial(self._read, index, rx)
            for index, rx in enumerate(self._sources)
            if rx is not None
        ]

    async def _read(self, index: int, rx: Receiver) -> None:
        port = self.ports[index]
        while True:
            try:
                key, value = await receive(rx)
            except EndOfStream:
                break
            port.enter()
            await self.deliver(index, key, value)
        port.input_ended()
        port.carrier_gone()
        self._carrier_exits()

    async def deliver(self, index: int, key: Hashable, value: Any) -> None:
        """Take upstream ``index``'s value for ``key``; carry the key on once it is complete."""
        if not self._started:
            self._start()
        pending = self._pending
        entry = pending.get(key)
        if entry is None:
            max_lead = self._max_lead
            if max_lead is not None and self._lead[index] >= max_lead:
                await self._wait_for_the_others(index)
                entry = pending.get(key)  # another upstream may have delivered it meanwhile
            if entry is None:
                observe = self._hooks.items
                if observe:
                    self._hooks.on_item_start(task=self.name, key=key)
                entry = pending[key] = _Pending(
                    len(self._names), perf_counter() if observe else 0.0, index
                )
                self._lead[index] += 1
        if entry.values[index] is not _MISSING:
            error = ValueError(
                f"join {self.name!r}: upstream {self._names[index]!r} delivered key {key!r} "
                "twice; keys must be unique per upstream"
            )
            raise StageFailed(self.name, error)
        entry.values[index] = value
        entry.arrived += 1
        if entry.arrived < len(self._names):
            self._leave()  # held as pending, no longer in flight
            return
        # free the entry as soon as the key is complete: memory stays bounded by skew
        del pending[key]
        self._lead[entry.first] -= 1
        if self._holding and self._lead[entry.first] == self._resume_at:
            self._wake()
        try:
            combined = self._combine(key, entry)
        except Exception as exc:  # a hook failed
            raise StageFailed(self.name, exc) from exc
        inlet = self._outlet.inlet
        if inlet is not None:
            inlet.enter()
            self._leave()
            await inlet.push(key, combined)
        else:
            await self._outlet.emit(key, combined)
            self._leave()

    def upstream_ended(self, index: int) -> None:
        """Upstream ``index`` has delivered everything."""
        if not self._open[index]:
            return
        self._open[index] = False
        self.wake_if_held()  # one upstream fewer: a waiting carrier may now be the last one
        self._leave(entered=False)

    def wake_if_held(self) -> None:
        """Wake the waiting carriers to look again, if there are any."""
        if self._holding:
            self._wake()

    def _leave(self, *, entered: bool = True) -> None:
        if entered:
            self.inbound -= 1
        if self.inbound or any(self._open) or self._ended:
            return
        self._ended = True
        if self._pending:
            raise StageFailed(self.name, LookupError(self._missing()))
        try:
            self._finish()
        except StageFailed:
            raise
        except Exception as exc:  # a hook failed
            raise StageFailed(self.name, exc) from exc

    def _progressing(self, index: int) -> bool:
        """Whether another open upstream has a carrier that is not waiting here."""
        return any(
            self._open[other] and self._held[other] < port.carriers
            for other, port in enumerate(self.ports)
            if other != index
        )

    async def _wait_for_the_others(self, index: int) -> None:
        """Wait while upstream ``index`` leads by more than half ``max_lead`` keys and another
        upstream can still deliver."""
        held = self._held
        while self._lead[index] > self._resume_at and self._progressing(index):
            caught_up = self._caught_up
            held[index] += 1
            self._holding += 1
            if held[index] >= self.ports[index].carriers:
                self._wake()  # this upstream is all waiting now: the others must not
            try:
                await caught_up.wait()
            finally:
                held[index] -= 1
                self._holding -= 1

    def _wake(self) -> None:
        """Wake the waiting carriers to look again; later waits wait for the next change."""
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
