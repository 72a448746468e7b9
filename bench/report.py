"""What the harness hands back: machine facts, results.json, and a plain-text table."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.features import FeatureStage
from bench.runs import Size
from bench.startup import HelpTiming

__all__ = ["format_report", "machine", "speed_line", "speed_probe", "write_results"]

_PACKAGES = ("offerflow", "polars", "httptools", "orjson", "uvicorn", "fastapi", "anyio")
_PROBE_LOOPS = 5_000_000
#: how far the speed probe may move between the start and the end of a clean run
_PROBE_DRIFT = 0.10


def speed_probe() -> float:
    """Seconds one core takes for a fixed pure-Python loop now (the median of 3 tries).

    Taken at the start and at the end of a run, it shows what the load average cannot: a
    machine slowed by work outside it, such as another tenant of a virtual machine's host.
    """
    tries = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(_PROBE_LOOPS):
            total += number
        tries.append(time.perf_counter() - started)
    return round(statistics.median(tries), 3)


def machine() -> dict[str, Any]:
    """The facts that make figures from two machines incomparable."""
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "speed_probe_s_at_start": speed_probe(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # the environment forbids writing byte code: the harness compiles offerflow itself
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write results.json atomically (NaN, never expected, is written as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(_finite(results), indent=2) + "\n")
    temp.replace(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# the sizes the goals of bench/README.md are set at
_RATIO_SIZES = (10_000, 100_000)
_CPU_SIZE = 100_000
_RSS_SIZE = 1_000_000


def format_report(
    sizes: Sequence[Size],
    features: FeatureStage | None,
    help_timings: Sequence[HelpTiming],
    *,
    machine_facts: dict[str, Any],
    server_workers: int,
    concurrency: int,
) -> str:
    """The table of sizes, the feature and --help lines, and the goals, as plain text."""
    lines = [
        f"offerflow bench: {machine_facts['usable_cores']} cores ({machine_facts['cpu']}), "
        f"python {machine_facts['python']}, polars {machine_facts['versions']['polars']}, "
        f"httptools {machine_facts['versions']['httptools']}; "
        f"server workers {server_workers}, concurrency {concurrency}",
        "",
    ]
    if sizes:
        repeats = len(sizes[0].pairs)
        lines += _table(sizes)
        lines.append(
            f"medians of {repeats} pipeline/floor pairs; floor_s is its request phase; "
            "cpu_us/req is the whole child's CPU / requests; the server's CPU is not measured"
        )
        lines.append("where the pipeline's time goes (medians):")
        for size in sizes:
            m = size.medians()
            lines.append(
                f"  {size.members}: before the first request {m['pipeline_before_requests_s']:.2f}"
                f" s, requests {m['pipeline_request_phase_s']:.2f} s (floor {m['floor_s']:.2f} s),"
                f" after the last answer {m['pipeline_after_requests_s']:.2f} s"
            )
        lines.append("")
    if features is not None:
        lines.append(
            f"feature stage, {features.rows_in} rows ({features.members} members): "
            f"read_transactions {features.read.median_s:.3f} s; "
            f"compute_features {features.offerflow.median_s:.3f} s vs bare polars "
            f"{features.bare.median_s:.3f} s: ratio {features.ratio:.2f} "
            f"(same result: {'yes' if features.agree else 'NO'})"
        )
    for timing in help_timings:
        lines.append(
            f"{timing.command}: {timing.median_s:.3f} s "
            f"(median of {len(timing.wall_s)}, min {min(timing.wall_s):.3f} s)"
        )
    lines += speed_line(machine_facts)
    goals = _goals(sizes, features, help_timings)
    if goals:
        lines += ["", "goals"]
        width = max(len(goal) for goal, _, _ in goals)
        for goal, measured, met in goals:
            lines.append(f"  {goal:<{width}}  {measured:>10}  {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def speed_line(machine_facts: dict[str, Any]) -> list[str]:
    """The speed probes at the start and the end, and a warning when they differ too much."""
    start = machine_facts.get("speed_probe_s_at_start")
    end = machine_facts.get("speed_probe_s_at_end")
    if start is None or end is None:
        return []
    line = f"speed probe (a fixed CPU loop): {start:.3f} s at the start, {end:.3f} s at the end"
    if abs(end - start) > _PROBE_DRIFT * min(start, end):
        line += ": the machine's speed changed during the run, run it again"
    return [line]


def _table(sizes: Sequence[Size]) -> list[str]:
    endpoints = sizes[0].endpoints()
    header = [
        "size",
        "pipeline_s",
        "floor_s",
        "ratio",
        "members/s",
        "cpu_us/req(pipe)",
        "cpu_us/req(floor)",
        *(f"{name} p50/p99 ms" for name in endpoints),
        "rss_MB",
    ]
    rows = [header]
    for size in sizes:
        m = size.medians()
        rows.append(
            [
                str(size.members),
                f"{m['pipeline_s']:.3f}",
                f"{m['floor_s']:.3f}",
                f"{m['ratio']:.3f}",
                f"{m['members_per_s']:.0f}",
                f"{m['pipeline_cpu_us_per_request']:.0f}",
                f"{m['floor_cpu_us_per_request']:.0f}",
                *(f"{m[f'{e}_p50_ms']:.1f}/{m[f'{e}_p99_ms']:.1f}" for e in endpoints),
                f"{m['pipeline_rss_mb']:.0f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _goals(
    sizes: Sequence[Size], features: FeatureStage | None, help_timings: Sequence[HelpTiming]
) -> list[tuple[str, str, bool]]:
    """Each goal of bench/README.md that this run measured: (goal, figure, met)."""
    goals: list[tuple[str, str, bool]] = []
    by_members = {size.members: size.medians() for size in sizes}
    for members in _RATIO_SIZES:
        if members in by_members:
            ratio = by_members[members]["ratio"]
            goals.append((f"ratio <= 1.10 at {members}", f"{ratio:.3f}", ratio <= 1.10))
    if _CPU_SIZE in by_members:
        cpu = by_members[_CPU_SIZE]["pipeline_cpu_us_per_request"]
        goals.append((f"client CPU <= 100 us/request at {_CPU_SIZE}", f"{cpu:.0f} us", cpu <= 100))
    if _RSS_SIZE in by_members:
        rss = max(p.process.max_rss_mb for s in sizes if s.members == _RSS_SIZE for p, _ in s.pairs)
        goals.append((f"{_RSS_SIZE} completes, peak RSS <= 1 GB", f"{rss:.0f} MB", rss <= 1024))
    if features is not None:
        goals.append(
            (
                f"features <= 1.5x bare polars ({features.rows_in} rows)",
                f"{features.ratio:.2f}x",
                features.ratio <= 1.5,
            )
        )
    # the installed script when there is one: that is what a user types
    for timing in sorted(help_timings, key=lambda t: t.command != "offerflow --help")[:1]:
        goals.append(
            (f"{timing.command} <= 0.15 s", f"{timing.median_s:.3f} s", timing.median_s <= 0.15)
        )
    return goals
