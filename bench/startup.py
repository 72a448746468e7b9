"""How long ``offerflow --help`` takes, as a user sees it: whole-process wall time."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.children import measure
from bench.workload import REPO

__all__ = ["HelpTiming", "measure_help"]


@dataclass(frozen=True, slots=True)
class HelpTiming:
    """Wall times of one ``--help`` command line over several runs."""

    command: str
    wall_s: list[float]
    max_rss_mb: float

    @property
    def median_s(self) -> float:
        """The median wall time."""
        return statistics.median(self.wall_s)

    def as_dict(self) -> dict[str, Any]:
        """For results.json."""
        return {
            "command": self.command,
            "median_s": round(self.median_s, 4),
            "min_s": round(min(self.wall_s), 4),
            "max_s": round(max(self.wall_s), 4),
            "wall_s": [round(t, 4) for t in self.wall_s],
            "max_rss_mb": round(self.max_rss_mb, 1),
        }


def measure_help(runs: int = 10) -> list[HelpTiming]:
    """Time ``python -m offerflow --help`` and, when installed, the ``offerflow`` script.

    The two command lines are alternated; each run is a fresh process, so the figure includes
    the interpreter's start and every import ``--help`` triggers.
    """
    commands = {"python -m offerflow --help": [sys.executable, "-m", "offerflow", "--help"]}
    script = Path(sys.executable).parent / "offerflow"
    if script.exists():
        commands["offerflow --help"] = [str(script), "--help"]
    walls: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, float] = dict.fromkeys(commands, 0.0)
    for _ in range(runs):
        for name, argv in commands.items():
            measured = measure(argv, cwd=REPO)
            walls[name].append(measured.wall_s)
            rss[name] = max(rss[name], measured.max_rss_mb)
    return [HelpTiming(name, walls[name], rss[name]) for name in commands]
