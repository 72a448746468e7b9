"""``offerflow dag``: a partner's workflow drawn as text or as a Mermaid flowchart.

Mermaid because GitHub, GitLab and most documentation sites render it from a fenced block, so
the drawing of a partner's DAG can live in its README or a pull request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = ["Graph", "draw"]

#: each task's kind and upstream tasks, in the order they were added (``Workflow.graph()``)
Graph = Mapping[str, tuple[str, tuple[str, ...]]]

#: how Mermaid draws each kind of task: a step a box, a stream a stadium, a join a hexagon
_SHAPES = {"step": ('["', '"]'), "stream": ('(["', '"])'), "join": ('{{"', '"}}')}


def draw(name: str, graph: Graph, form: Literal["text", "mermaid"]) -> str:
    """The workflow ``name`` with tasks ``graph``, as aligned text or a Mermaid flowchart."""
    return _mermaid(graph) if form == "mermaid" else _text(name, graph)


def _text(name: str, graph: Graph) -> str:
    width = max(map(len, graph), default=0)
    lines = [f"workflow {name}: {len(graph)} tasks"]
    for task, (kind, after) in graph.items():
        upstream = f"  <- {', '.join(after)}" if after else ""
        lines.append(f"  {task:<{width}}  {kind:<6}{upstream}".rstrip())
    return "\n".join(lines) + "\n"


def _mermaid(graph: Graph) -> str:
    # ids, not names, in the chart: a task may be called like a Mermaid keyword (``end``)
    ids = {task: f"t{index}" for index, task in enumerate(graph)}
    lines = ["flowchart LR"]
    for task, (kind, _) in graph.items():
        left, right = _SHAPES.get(kind, _SHAPES["step"])
        lines.append(f"    {ids[task]}{left}{task}{right}")
    for task, (_, after) in graph.items():
        lines += [f"    {ids[upstream]} --> {ids[task]}" for upstream in after]
    return "\n".join(lines) + "\n"
