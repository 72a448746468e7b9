"""One size, measured: the pipeline and the floor, alternated, each in its own process.

A pipeline run is ``python -m offerflow run`` on the size's input, against the live server;
a floor run is ``python -m bench.floor`` with the bodies of a warm-up pipeline run. Both are
measured from outside (wall, CPU, peak RSS; :mod:`bench.children`); the pipeline's figures
also come from its summary.json and requests.parquet, the floor's from what it prints.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from bench.children import Measured, measure
from bench.workload import AS_OF, REPO, Partner, prepare_bodies

__all__ = ["FloorRun", "PipelineRun", "Size", "measure_size", "run_floor", "run_pipeline"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One ``offerflow run``: the process, and what its own outputs say."""

    process: Measured
    members: int
    scored: int
    #: rows of requests.parquet: HTTP attempts, retries included
    requests: int
    #: from the fork to the first request: start-up, reading, features
    before_requests_s: float
    #: from the first request's start to the last answer (requests.parquet)
    request_phase_s: float
    status: str
    #: endpoint name -> its task's figures from summary.json (items, p50_ms, p99_ms, ...)
    endpoints: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        """The run's figures for results.json."""
        return {
            **self.process.as_dict(),
            "members": self.members,
            "scored": self.scored,
            "requests": self.requests,
            "before_requests_s": round(self.before_requests_s, 4),
            "request_phase_s": round(self.request_phase_s, 4),
            "status": self.status,
            "endpoints": self.endpoints,
        }


@dataclass(frozen=True, slots=True)
class FloorRun:
    """One ``python -m bench.floor``: the process, and the request phase it timed itself."""

    process: Measured
    wall_s: float
    cpu_s: float
    requests: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        """The run's figures for results.json: ``process`` is the whole child."""
        return {
            "process": self.process.as_dict(),
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "requests": self.requests,
            "errors": self.errors,
        }


def run_pipeline(partner: Partner, *, out: Path, run_id: str, concurrency: int) -> PipelineRun:
    """Run the pipeline once in a child process; its run directory is left in place."""
    argv = [
        sys.executable,
        "-m",
        "offerflow",
        "run",
        "--config",
        str(partner.path),
        "--out",
        str(out),
        "--as-of",
        AS_OF,
        "--concurrency",
        str(concurrency),
        "--run-id",
        run_id,
    ]
    process = measure(argv, cwd=REPO)
    run_dir = out / partner.name / run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    started = pl.col("started_at").dt.epoch("us") / 1e6
    requests, first, last = (
        pl.scan_parquet(run_dir / "requests.parquet")
        .select(
            pl.len(),
            started.min().alias("first"),
            (started + pl.col("latency_ms") / 1000).max().alias("last"),
        )
        .collect()
        .row(0)
    )
    ledger = summary["ledger"]
    return PipelineRun(
        process=process,
        members=int(ledger["members_in"]),
        scored=int(ledger["members_by_status"].get("ok", 0)),
        requests=int(requests),
        before_requests_s=float(first or 0.0) - process.started_at if requests else float("nan"),
        request_phase_s=float(last or 0.0) - float(first or 0.0) if requests else float("nan"),
        status=str(summary["status"]),
        # an endpoint's latency is its task's: a member's time in it, retries included
        endpoints={name: dict(summary["tasks"][name]) for name in summary["endpoints"]},
    )


def run_floor(base_url: str, bodies: Path, *, concurrency: int) -> FloorRun:
    """Run the floor once in a child process."""
    argv = [
        sys.executable,
        "-m",
        "bench.floor",
        "--base-url",
        base_url,
        "--bodies",
        str(bodies),
        "--concurrency",
        str(concurrency),
    ]
    process = measure(argv, cwd=REPO)
    report = json.loads(process.stdout)
    return FloorRun(
        process=process,
        wall_s=float(report["wall_s"]),
        cpu_s=float(report["cpu_s"]),
        requests=int(report["requests"]),
        errors=int(report["errors"]),
    )


@dataclass(frozen=True, slots=True)
class Size:
    """Every run of one size, and the pair-by-pair figures derived from them."""

    members: int
    warmup: PipelineRun
    pairs: list[tuple[PipelineRun, FloorRun]]

    def pair_figures(self) -> list[dict[str, float]]:
        """Per (pipeline, floor) pair: the figures the medians are taken of."""
        return [_pair_figures(pipeline, floor) for pipeline, floor in self.pairs]

    def medians(self) -> dict[str, float]:
        """The median of every pair figure."""
        figures = self.pair_figures()
        return {key: round(statistics.median(f[key] for f in figures), 4) for key in figures[0]}

    def endpoints(self) -> list[str]:
        """The endpoint names, in the pipeline's (config) order."""
        return list(self.warmup.endpoints)

    def as_dict(self) -> dict[str, Any]:
        """Everything about this size for results.json."""
        return {
            "members": self.members,
            "warmup": self.warmup.as_dict(),
            "runs": [
                {"pipeline": pipeline.as_dict(), "floor": floor.as_dict(), "figures": figures}
                for (pipeline, floor), figures in zip(self.pairs, self.pair_figures(), strict=True)
            ],
            "medians": self.medians(),
        }


def _pair_figures(pipeline: PipelineRun, floor: FloorRun) -> dict[str, float]:
    figures = {
        "pipeline_s": pipeline.process.wall_s,
        "floor_s": floor.wall_s,
        "floor_process_s": floor.process.wall_s,
        "ratio": pipeline.process.wall_s / floor.wall_s,
        "members_per_s": pipeline.members / pipeline.process.wall_s,
        "pipeline_before_requests_s": pipeline.before_requests_s,
        "pipeline_request_phase_s": pipeline.request_phase_s,
        "pipeline_after_requests_s": (
            pipeline.process.wall_s - pipeline.before_requests_s - pipeline.request_phase_s
        ),
        "pipeline_requests": pipeline.requests,
        "floor_requests": floor.requests,
        "pipeline_cpu_s": pipeline.process.cpu_s,
        "floor_cpu_s": floor.process.cpu_s,
        "floor_phase_cpu_s": floor.cpu_s,
        "pipeline_cpu_us_per_request": _per_request(pipeline.process.cpu_s, pipeline.requests),
        "floor_cpu_us_per_request": _per_request(floor.process.cpu_s, floor.requests),
        "floor_phase_cpu_us_per_request": _per_request(floor.cpu_s, floor.requests),
        "pipeline_rss_mb": pipeline.process.max_rss_mb,
        "floor_rss_mb": floor.process.max_rss_mb,
    }
    for name, endpoint in pipeline.endpoints.items():
        figures[f"{name}_p50_ms"] = float(endpoint["p50_ms"])
        figures[f"{name}_p99_ms"] = float(endpoint["p99_ms"])
    return figures


def _per_request(cpu_s: float, requests: int) -> float:
    return cpu_s / requests * 1e6 if requests else float("nan")


def measure_size(
    members: int,
    partner: Partner,
    *,
    base_url: str,
    work: Path,
    repeats: int,
    concurrency: int,
    progress: Progress,
) -> Size:
    """Warm up with one pipeline run (it also gives the bodies), then alternate A B A B …"""
    out = work / "runs" / str(members)
    shutil.rmtree(out, ignore_errors=True)
    bodies = work / "bodies" / f"{partner.path.stem}.tsv"

    warmup = run_pipeline(partner, out=out, run_id="warmup", concurrency=concurrency)
    _check(warmup, members)
    written = prepare_bodies(out / partner.name / "warmup" / "offers.parquet", partner, bodies)
    _discard(out, partner, "warmup")
    progress(
        f"{members}: warm-up pipeline {warmup.process.wall_s:.2f} s; bodies for {written} members"
    )

    pairs: list[tuple[PipelineRun, FloorRun]] = []
    for index in range(1, repeats + 1):
        run_id = f"run-{index}"
        pipeline = run_pipeline(partner, out=out, run_id=run_id, concurrency=concurrency)
        _check(pipeline, members)
        _discard(out, partner, run_id)
        floor = run_floor(base_url, bodies, concurrency=concurrency)
        if floor.errors:
            progress(f"{members}: warning: the floor had {floor.errors} failed requests")
        if floor.requests != pipeline.requests:
            progress(
                f"{members}: note: pipeline made {pipeline.requests} requests, "
                f"floor {floor.requests} (retries?)"
            )
        pairs.append((pipeline, floor))
        progress(
            f"{members}: pair {index}/{repeats}: pipeline {pipeline.process.wall_s:.2f} s, "
            f"floor {floor.wall_s:.2f} s, ratio {pipeline.process.wall_s / floor.wall_s:.3f}"
        )
    shutil.rmtree(out, ignore_errors=True)
    return Size(members=members, warmup=warmup, pairs=pairs)


def _check(run: PipelineRun, members: int) -> None:
    """A run that did not score everyone measured something else: stop there."""
    if run.status != "ok":
        raise RuntimeError(f"{members} members: the pipeline run ended {run.status!r}")


def _discard(out: Path, partner: Partner, run_id: str) -> None:
    """Remove a run directory once read: at 1M members each holds hundreds of MB."""
    shutil.rmtree(out / partner.name / run_id, ignore_errors=True)
