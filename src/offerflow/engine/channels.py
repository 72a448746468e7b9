"""The edges of a running workflow: bounded channels, inlets for fused edges, result slots.

An item goes from one task to the next in one of two ways. Across a **channel** (a bounded
anyio memory stream) when the producer fans out, or either side works in batches: the consumer
has workers of its own that take items from it. Through an **inlet** when the producer's only
consumer takes items one at a time (a stream task or a join): the coroutine that produced the
item carries it on into the consumer's processing, with no hand-off to another task in between
(a fused edge). Each hand-off across a channel wakes a waiting task, which costs more than a
small item's whole processing; a chain of fused edges runs one item in one coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Hashable, Sequence
from typing import Any, Protocol

import anyio
from anyio import WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: What travels on an edge: ``(key, value)``, where the value may be a Failure.
Item = tuple[Hashable, Any]
Sender = MemoryObjectSendStream[Item]
Receiver = MemoryObjectReceiveStream[Item]


def channel(size: int) -> tuple[Sender, Receiver]:
    """Return both ends of one bounded edge."""
    return anyio.create_memory_object_stream[Item](max_buffer_size=size)


async def receive(rx: Receiver) -> Item:
    """Return the next item of ``rx``; raise ``anyio.EndOfStream`` when its producer is done.

    Tries without waiting first: ``receive()`` yields to the event loop on every call, which
    would cost more than the item itself in a busy pipeline. Waiting happens when the buffer is
    empty, so a consumer still yields at least once per buffer-full.
    """
    try:
        return rx.receive_nowait()
    except WouldBlock:
        return await rx.receive()


class Inlet(Protocol):
    """Where a fused edge delivers: one input of a stream task or of a join.

    The producer calls ``enter()`` before it lets go of the item (so that the consumer counts
    it as in flight before the producer may finish), then awaits ``push``, which processes the
    item and carries it on. ``input_ended()`` is the end of the producer's stream;
    ``carrier_gone()`` says one coroutine that could deliver here has exited.
    """

    def enter(self) -> None:
        """Count one item as arriving."""

    def push(self, key: Hashable, value: Any) -> Awaitable[None]:
        """Process one entered item and pass it on (await it)."""

    def input_ended(self) -> None:
        """No more items will come this way."""

    def carrier_gone(self) -> None:
        """One coroutine that could deliver here has exited."""


class Slot:
    """A task's whole result (a step's result or a collected stream), awaited by consumers."""

    __slots__ = ("_ready", "value")

    def __init__(self) -> None:
        self._ready = anyio.Event()
        self.value: Any = None

    def set(self, value: Any) -> None:
        """Store the result and wake every consumer."""
        self.value = value
        self._ready.set()

    async def wait(self) -> Any:
        """Return the result once it is set."""
        await self._ready.wait()
        return self.value


class Outlet:
    """Where a task's items go: an inlet (a fused edge), or each downstream channel and a list."""

    __slots__ = ("_senders", "collected", "inlet")

    def __init__(
        self,
        senders: Sequence[Sender] = (),
        collected: list[Any] | None = None,
        inlet: Inlet | None = None,
    ) -> None:
        if inlet is not None and (senders or collected is not None):
            raise ValueError("a fused edge is a task's only consumer")
        self._senders = tuple(senders)
        self.collected = collected
        self.inlet = inlet

    async def emit(self, key: Hashable, value: Any) -> None:
        """Send ``(key, value)`` to every downstream channel, waiting while one is full."""
        if self._senders:
            item = (key, value)
            for tx in self._senders:
                # send() would yield on every item; only wait when the buffer is full
                try:
                    tx.send_nowait(item)
                except WouldBlock:
                    await tx.send(item)
        if self.collected is not None:
            self.collected.append(value)

    async def emit_all(self, items: Sequence[Item]) -> None:
        """Emit every ``(key, value)`` of ``items`` in order, as ``emit`` does one."""
        senders = self._senders
        for item in items:
            for tx in senders:
                try:
                    tx.send_nowait(item)
                except WouldBlock:
                    await tx.send(item)
        if self.collected is not None:
            self.collected.extend(value for _, value in items)

    def close(self) -> None:
        """End the stream for every consumer: close the channels, or end the inlet's input."""
        for tx in self._senders:
            tx.close()
        if self.inlet is not None:
            self.inlet.input_ended()
