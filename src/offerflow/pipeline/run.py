"""One run of the offer workflow: its directory, its outputs and its summary."""

from __future__ import annotations

import platform
import resource
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Hook, MetricsHook
from offerflow.errors import (
    ExitCode,
    FailureBudgetExceeded,
    OfferflowError,
    OutputError,
    TaskFailedError,
    UsageError,
)
from offerflow.pipeline.client import Endpoint, ModelClient
from offerflow.pipeline.members import Status
from offerflow.pipeline.reader import ReadResult
from offerflow.pipeline.sinks import ChunkedTable, RequestLog, atomic_write, write_json
from offerflow.pipeline.workflow import Tally, build_workflow, offers_schema

__all__ = ["RunReport", "new_run_dir", "run_pipeline"]

_FAILED = frozenset(
    {Status.MODEL_ERROR, Status.INVALID_RESPONSE, Status.ENDPOINT_UNAVAILABLE, Status.INTERRUPTED}
)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a finished run leaves behind: where, its summary and the exit code it earned."""

    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    error: OfferflowError | None = None


def new_run_dir(config: PartnerConfig, out: Path | None = None, run_id: str | None = None) -> Path:
    """Create ``<out>/<partner>/<run_id>/``, failing (exit 4) before any work when it can't."""
    run_id = run_id or (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3))
    run_dir = (out or config.output.dir) / config.partner / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
        probe = run_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot create the run directory: {exc.strerror}", path=run_dir) from exc
    return run_dir


async def run_pipeline(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    concurrency: int | None = None,
    hooks: Sequence[Hook] = (),
) -> RunReport:
    """Run the offer workflow for one partner into ``run_dir`` and write every output file."""
    started = time.perf_counter()
    metrics = MetricsHook()
    requests = RequestLog(run_dir)
    tally = Tally()
    tables: list[ChunkedTable] = []

    def make_offers(features: pl.Schema) -> ChunkedTable:
        table = ChunkedTable(run_dir, "offers", offers_schema(config, features), chunk_rows=16384)
        tables.append(table)
        return table

    if concurrency is not None:
        config = config.model_copy(
            update={
                "models": tuple(
                    m.model_copy(update={"concurrency": concurrency}) for m in config.models
                ),
                "offer": config.offer.model_copy(update={"concurrency": concurrency}),
            }
        )
    endpoints = [
        Endpoint(
            name=e.name,
            url=e.url,
            response_field=e.response_field,
            answer="label" if e is config.offer else "number",
            timeout_s=e.timeout_s,
            retries=e.retries,
        )
        for e in config.endpoints
    ]
    error: OfferflowError | None = None
    results: Mapping[str, Any] = {}
    async with ModelClient(
        endpoints,
        connections=sum(e.concurrency for e in config.endpoints),
        connect_timeout_s=config.connect_timeout_s,
        attempts=requests,
    ) as client:
        workflow = build_workflow(
            config, as_of=as_of, client=client, offers=make_offers, tally=tally
        )
        workflow.validate()
        try:
            results = (await workflow.run(hooks=[metrics, *hooks])).results
        except TaskFailedError as exc:
            if isinstance(exc.cause, UsageError | OutputError):
                raise exc.cause from exc
            error = exc

    for table in tables:
        table.finish(config.output.formats, sort_by="member_id")
    requests.finish()
    read = results.get("read")
    if isinstance(read, ReadResult):
        atomic_write(run_dir / "rejects.csv", read.rejects.write_csv)
    else:
        read = None

    failed = sum(n for status, n in tally.by_status.items() if status in _FAILED)
    scored = sum(tally.by_status.values()) - tally.by_status[Status.NO_TRANSACTIONS]
    exit_code = error.exit_code if error is not None else ExitCode.OK
    if error is None and scored and failed / scored > config.failure_budget:
        error = FailureBudgetExceeded(failed, scored, config.failure_budget)
        exit_code = error.exit_code
    summary = _summary(
        config,
        run_dir=run_dir,
        as_of=as_of,
        read=read,
        tally=tally,
        metrics=metrics,
        wall_s=time.perf_counter() - started,
        exit_code=exit_code,
        error=error,
    )
    write_json(run_dir / "summary.json", summary)
    return RunReport(run_dir, summary, exit_code, error)


def _summary(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult | None,
    tally: Tally,
    metrics: MetricsHook,
    wall_s: float,
    exit_code: int,
    error: OfferflowError | None,
) -> dict[str, Any]:
    members_in = 0 if read is None else read.members.len()
    recorded = sum(tally.by_status.values())
    figures = _endpoint_figures(run_dir / "requests.parquet")
    requests = {e.name: figures[e.name] for e in config.endpoints if e.name in figures}
    return {
        "run_id": run_dir.name,
        "partner": config.partner,
        "as_of": as_of.isoformat(),
        "input": str(config.input.path),
        "config_hash": config.fingerprint(),
        "versions": {
            "offerflow": metadata.version("offerflow"),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "aiohttp": metadata.version("aiohttp"),
        },
        "status": "ok" if exit_code == ExitCode.OK else "failed",
        "exit_code": exit_code,
        "error": None if error is None else str(error),
        "ledger": {
            "rows_in": 0 if read is None else read.rows_in,
            "rows_used": 0 if read is None else read.rows_used,
            "rows_rejected": 0 if read is None else read.rows_rejected,
            "rejects_by_reason": {} if read is None else read.rejects_by_reason,
            "members_in": members_in,
            "members_by_status": dict(sorted(tally.by_status.items())),
            "balanced": recorded == members_in,
        },
        "offers_by_type": dict(sorted(tally.by_offer.items())),
        "wall_s": round(wall_s, 4),
        "members_per_s": round(members_in / wall_s, 1) if wall_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tasks": {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.as_dict().items()}
            for name, m in metrics.snapshot().items()
        },
        "endpoints": requests,
    }


def _endpoint_figures(path: Path) -> dict[str, dict[str, float | int]]:
    """Per endpoint: requests, errors and latency percentiles, from the requests table."""
    if not path.exists():
        return {}
    table = (
        pl.scan_parquet(path)
        .group_by("endpoint")
        .agg(
            pl.len().alias("requests"),
            pl.col("error").is_not_null().sum().alias("errors"),
            *(
                pl.col("latency_ms").quantile(q, "nearest").round(3).alias(f"p{int(q * 100)}_ms")
                for q in (0.5, 0.9, 0.99)
            ),
            pl.col("latency_ms").max().round(3).alias("max_ms"),
        )
        .sort("endpoint")
        .collect()
    )
    return {row.pop("endpoint"): row for row in table.iter_rows(named=True)}
