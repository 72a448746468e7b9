"""The hook protocol: how a run reports what it does, and the chain that calls the hooks."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any


class Hook:
    """Observes a workflow run; every method is a no-op, so override only what you need.

    The engine calls hooks on the event loop, in the order they were passed to ``run``, with
    keyword arguments only. A hook must be cheap (item events fire once per item per task) and
    must not raise: an exception from a hook fails the run. Steps report their one call
    as one item with key ``None``; a batched stream task reports each item of a batch, with
    the batch's latency, and a retry of a batch as a retry of each of its items. Failures
    forwarded untouched by a stream task are not its items and fire no item event there.
    """

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        """Called once before any task starts; ``tasks`` in topological order."""

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        """Called once when the run is over; ``error`` is what the run raises, if anything."""

    def on_task_start(self, *, task: str) -> None:
        """Called when a task's inputs are ready: its first item, or its dependencies' results."""

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        """Called when a task finished or failed; tasks cancelled by another's failure get none."""

    def on_item_start(self, *, task: str, key: Hashable) -> None:
        """Called when a task starts working on an item."""

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        """Called when a task produced an item's value; ``latency`` in seconds incl. retries."""

    def on_item_failed(
        self, *, task: str, key: Hashable, error: BaseException, latency: float
    ) -> None:
        """Called when a task emits a Failure for an item; ``latency`` in seconds."""

    def on_retry(
        self, *, task: str, key: Hashable | None, attempt: int, error: BaseException, delay: float
    ) -> None:
        """Called before waiting ``delay`` seconds to retry after failed attempt ``attempt``."""


def _overriding(hooks: Sequence[Hook], event: str) -> tuple[Hook, ...]:
    base = getattr(Hook, event)
    return tuple(hook for hook in hooks if getattr(type(hook), event, base) is not base)


def _dispatch(hooks: Sequence[Hook], event: str) -> Callable[..., None]:
    """One callable for an event: nothing, the one hook's own method, or a loop over them."""
    listening: list[Callable[..., None]] = [
        getattr(hook, event) for hook in _overriding(hooks, event)
    ]
    if not listening:
        return _ignore
    if len(listening) == 1:
        return listening[0]  # item events fire per item per task: no loop for the usual one

    def every(**fields: Any) -> None:
        for method in listening:
            method(**fields)

    return every


def _ignore(**fields: Any) -> None:
    """An event no hook listens to."""


class HookChain:
    """The hooks of one run behind one face; an event only calls the hooks that override it.

    Each event is one callable, chosen when the chain is made. ``items`` tells the runner
    whether anyone listens to item events, so that a run without such hooks skips the per-item
    clock reads and calls entirely.
    """

    __slots__ = (
        "items",
        "on_item_done",
        "on_item_failed",
        "on_item_start",
        "on_retry",
        "on_run_end",
        "on_run_start",
        "on_task_end",
        "on_task_start",
    )

    def __init__(self, hooks: Sequence[Hook]) -> None:
        #: ``(*, workflow, tasks)``: the run starts
        self.on_run_start: Callable[..., None] = _dispatch(hooks, "on_run_start")
        #: ``(*, workflow, error)``: the run ended
        self.on_run_end: Callable[..., None] = _dispatch(hooks, "on_run_end")
        #: ``(*, task)``: a task started
        self.on_task_start: Callable[..., None] = _dispatch(hooks, "on_task_start")
        #: ``(*, task, error)``: a task ended
        self.on_task_end: Callable[..., None] = _dispatch(hooks, "on_task_end")
        #: ``(*, task, key)``: an item started
        self.on_item_start: Callable[..., None] = _dispatch(hooks, "on_item_start")
        #: ``(*, task, key, latency)``: an item is done
        self.on_item_done: Callable[..., None] = _dispatch(hooks, "on_item_done")
        #: ``(*, task, key, error, latency)``: an item failed
        self.on_item_failed: Callable[..., None] = _dispatch(hooks, "on_item_failed")
        #: ``(*, task, key, attempt, error, delay)``: an attempt will be retried
        self.on_retry: Callable[..., None] = _dispatch(hooks, "on_retry")
        item_events = ("on_item_start", "on_item_done", "on_item_failed")
        self.items = any(_overriding(hooks, event) for event in item_events)
