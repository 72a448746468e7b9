"""A hook that records every event, for tests that check what a run reported."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from offerflow.engine import Hook


class Recorder(Hook):
    """Records every hook event as ``(event, fields)`` in the order the engine called them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def named(self, event: str) -> list[dict[str, Any]]:
        """Return the fields of every recorded ``event``."""
        return [fields for name, fields in self.events if name == event]

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        self.events.append(("run_start", {"workflow": workflow, "tasks": tasks}))

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        self.events.append(("run_end", {"workflow": workflow, "error": error}))

    def on_task_start(self, *, task: str) -> None:
        self.events.append(("task_start", {"task": task}))

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        self.events.append(("task_end", {"task": task, "error": error}))

    def on_item_start(self, *, task: str, key: Hashable) -> None:
        self.events.append(("item_start", {"task": task, "key": key}))

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        self.events.append(("item_done", {"task": task, "key": key, "latency": latency}))

    def on_item_failed(
        self, *, task: str, key: Hashable, error: BaseException, latency: float
    ) -> None:
        fields = {"task": task, "key": key, "error": error, "latency": latency}
        self.events.append(("item_failed", fields))

    def on_retry(
        self, *, task: str, key: Hashable | None, attempt: int, error: BaseException, delay: float
    ) -> None:
        fields = {"task": task, "key": key, "attempt": attempt, "error": error, "delay": delay}
        self.events.append(("retry", fields))
