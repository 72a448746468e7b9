"""Small workflow shapes for the engine tests: a workflow plus what its tasks recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

from offerflow.engine import Workflow


@dataclass
class Shape:
    """A small workflow and the log of the task calls it made."""

    wf: Workflow
    calls: list[str] = field(default_factory=list)
    edges: tuple[tuple[str, str], ...] = ()


@dataclass
class FailingShape(Shape):
    """A workflow whose task ``boom`` fails while its sibling ``slow`` runs."""

    error: Exception = field(default_factory=lambda: ValueError("boom"))
    sibling_cancelled: bool = False
