"""The edges of a running workflow: bounded item channels, fan-out outlets and result slots."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import anyio
from anyio import WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: What travels on a channel: ``(key, value)``, where the value may be a Failure.
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
    """Where a task's items go: each downstream channel (fan-out) and, if wanted, a list."""

    __slots__ = ("_senders", "collected")

    def __init__(self, senders: Sequence[Sender], collected: list[Any] | None) -> None:
        self._senders = tuple(senders)
        self.collected = collected

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
        """Close every downstream channel: end of stream for the consumers."""
        for tx in self._senders:
            tx.close()
