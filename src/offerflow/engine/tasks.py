"""Task specs: what a workflow knows about each of its tasks before it runs."""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from offerflow.engine.policy import Policy
from offerflow.errors import GraphError

TaskKind = Literal["step", "stream", "join"]


def check_name(name: str) -> None:
    """Raise GraphError unless ``name`` can be a keyword argument (a step fn receives it so)."""
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
        raise GraphError(
            f"task name {name!r} is not a valid Python identifier "
            "(a dependent step receives each result as a keyword argument of that name)",
            tasks=(str(name),),
        )


def is_async(fn: Callable[..., Any]) -> bool:
    """Return whether calling ``fn`` gives an awaitable (coroutine function or async __call__)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 -- an object with an async __call__
    )


@dataclass(frozen=True, slots=True)
class StepTask:
    """A task called once with its dependencies' whole results, by name."""

    kind: ClassVar[TaskKind] = "step"
    name: str
    fn: Callable[..., Any]
    after: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True, slots=True)
class StreamTask:
    """A task called once per item of its one upstream, with bounded concurrency.

    With a ``batch_size``, it is called once per batch of up to that many items instead.
    """

    kind: ClassVar[TaskKind] = "stream"
    name: str
    fn: Callable[[Any], Any]
    upstream: str
    concurrency: int
    key: Callable[[Any], Hashable] | None
    policy: Policy
    accepts_failures: bool
    collect: bool
    batch_size: int | None = None
    linger_s: float = 0.005

    @property
    def after(self) -> tuple[str, ...]:
        """The one upstream task, as a tuple like every spec's."""
        return (self.upstream,)


@dataclass(frozen=True, slots=True)
class JoinTask:
    """A task that combines the items of several upstream streams by key."""

    kind: ClassVar[TaskKind] = "join"
    name: str
    after: tuple[str, ...]
    collect: bool
    #: hold back an upstream that leads the others by this many keys (None: never)
    max_lead: int | None = None


TaskSpec = StepTask | StreamTask | JoinTask
