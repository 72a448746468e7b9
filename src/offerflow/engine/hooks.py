"""The hook protocol: how a run reports what it does, and the chain that calls the hooks."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


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


class HookChain:
    """The hooks of one run behind one face; an event only calls the hooks that override it.

    ``items`` tells the runner whether anyone listens to item events, so that a run without
    such hooks skips the per-item clock reads and calls entirely.
    """

    __slots__ = (
        "_item_done",
        "_item_failed",
        "_item_start",
        "_retry",
        "_run_end",
        "_run_start",
        "_task_end",
        "_task_start",
        "items",
    )

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self._run_start = _overriding(hooks, "on_run_start")
        self._run_end = _overriding(hooks, "on_run_end")
        self._task_start = _overriding(hooks, "on_task_start")
        self._task_end = _overriding(hooks, "on_task_end")
        self._item_start = _overriding(hooks, "on_item_start")
        self._item_done = _overriding(hooks, "on_item_done")
        self._item_failed = _overriding(hooks, "on_item_failed")
        self._retry = _overriding(hooks, "on_retry")
        self.items = bool(self._item_start or self._item_done or self._item_failed)

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        """Tell every hook the run starts."""
        for hook in self._run_start:
            hook.on_run_start(workflow=workflow, tasks=tasks)

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        """Tell every hook the run ended."""
        for hook in self._run_end:
            hook.on_run_end(workflow=workflow, error=error)

    def on_task_start(self, *, task: str) -> None:
        """Tell every hook a task started."""
        for hook in self._task_start:
            hook.on_task_start(task=task)

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        """Tell every hook a task ended."""
        for hook in self._task_end:
            hook.on_task_end(task=task, error=error)

    def on_item_start(self, *, task: str, key: Hashable) -> None:
        """Tell every hook an item started."""
        for hook in self._item_start:
            hook.on_item_start(task=task, key=key)

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        """Tell every hook an item is done."""
        for hook in self._item_done:
            hook.on_item_done(task=task, key=key, latency=latency)

    def on_item_failed(
        self, *, task: str, key: Hashable, error: BaseException, latency: float
    ) -> None:
        """Tell every hook an item failed."""
        for hook in self._item_failed:
            hook.on_item_failed(task=task, key=key, error=error, latency=latency)

    def on_retry(
        self, *, task: str, key: Hashable | None, attempt: int, error: BaseException, delay: float
    ) -> None:
        """Tell every hook an attempt will be retried."""
        for hook in self._retry:
            hook.on_retry(task=task, key=key, attempt=attempt, error=error, delay=delay)
