"""One run of the offer pipeline in this process: its partition, its summary, stop and resume.

A run checks its endpoints' contracts, runs its one partition (:mod:`~offerflow.pipeline.
partition`: every member, end to end), then finishes as every run does, whatever ran its
partitions (:func:`finish_run`): the summary merged from the partitions' results, the exit code
it earned, ``offers.csv`` and ``rejects.csv`` for people (the command line adds ``report.html``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import platform
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Hook
from offerflow.errors import (
    ContractError,
    ExitCode,
    FailureBudgetExceeded,
    OfferflowError,
    OutputError,
)
from offerflow.pipeline.endpoints import check_contracts
from offerflow.pipeline.inputs import ReadResult
from offerflow.pipeline.members import Status
from offerflow.pipeline.outputs import (
    PartitionResult,
    atomic_write,
    merge,
    write_json,
)
from offerflow.pipeline.partition import (
    Progress,
    describe_error,
    partition_result,
    run_partition,
)
from offerflow.pipeline.stopping import Shutdown, watch_signals
from offerflow.pipeline.workflow import (
    check_input,
    client_for,
    read_input,
    workflow_graph,
    workflow_order,
)

__all__ = [
    "FAILED",
    "RunReport",
    "check_endpoint_contracts",
    "finish_run",
    "loop_options",
    "record_failure",
    "run_pipeline",
    "run_until_done",
]

log = logging.getLogger(__name__)

#: the statuses of members whose scoring failed: they count against the failure budget
FAILED = (
    Status.MODEL_ERROR,
    Status.INVALID_RESPONSE,
    Status.ENDPOINT_UNAVAILABLE,
    Status.TLS_ERROR,
    Status.PARTITION_FAILED,
)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a finished run leaves behind: where, its summary and the exit code it earned."""

    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    error: OfferflowError | None = None


async def run_pipeline(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult | None = None,
    concurrency: int | None = None,
    hooks: Sequence[Hook] = (),
    shutdown: Shutdown | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    config_hash: str | None = None,
) -> RunReport:
    """Run the offer workflow for one partner into ``run_dir`` and write every output file.

    ``read`` is the input, read by :func:`~offerflow.pipeline.workflow.read_input` and checked
    by :func:`~offerflow.pipeline.workflow.check_input`; without it the input is read and
    checked first. With ``resume``, members already committed there as ``ok`` or
    ``no_transactions`` are not scored again. ``progress`` is told a few times a second how many
    members are recorded, of how many. A run that fails before its summary (bad input, a
    contract mismatch, a cycle, …) leaves one all the same, status ``failed`` with the error
    (:func:`record_failure`). ``config_hash`` is the summary's (by default ``config``'s).
    """
    started, started_at = time.perf_counter(), time.time()
    config_hash = config_hash or config.fingerprint()
    shutdown = shutdown or Shutdown()
    try:
        if read is None:
            read = read_input(config, as_of)
            check_input(config, read, as_of)
        config = config.with_concurrency(concurrency)
        workflow_order(config)  # a cycle among models is refused before any call
        await check_endpoint_contracts(config)
        outcome = await run_partition(
            config,
            run_dir=run_dir,
            as_of=as_of,
            read=read,
            hooks=hooks,
            shutdown=shutdown,
            resume=resume,
            progress=progress,
        )
    except Exception as exc:
        record_failure(
            config,
            run_dir=run_dir,
            as_of=as_of,
            error=exc,
            read=read,
            wall_s=time.perf_counter() - started,
            config_hash=config_hash,
        )
        raise
    error: OfferflowError | None = outcome.failure
    if outcome.lost and error is None:
        error = OfferflowError(f"{outcome.lost} members had no result recorded (internal error)")
    return finish_run(
        config,
        run_dir=run_dir,
        as_of=as_of,
        results=[outcome.result],
        stopped_by=shutdown.signal if shutdown.requested else None,
        error=error,
        wall_s=time.perf_counter() - started,
        started_at=started_at,
        config_hash=config_hash,
        resume=resume,
    )


async def check_endpoint_contracts(config: PartnerConfig) -> None:
    """Compare every endpoint's published schema with what the config sends; a mismatch is a
    ContractError (exit 2), an endpoint that cannot be asked a warning."""
    async with client_for(config) as client:
        contracts = await check_contracts(config, client)
    for problem in contracts.unreachable:
        log.warning("contract not checked: %s", problem)
    if contracts.mismatches:
        raise ContractError(contracts.mismatches)


def finish_run(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    results: Sequence[PartitionResult],
    stopped_by: int | None,
    error: OfferflowError | None,
    wall_s: float,
    started_at: float,
    config_hash: str,
    resume: bool,
    extra: dict[str, Any] | None = None,
) -> RunReport:
    """End a run whose partitions are done: its summary, exit code, exports and report.

    ``error`` is what went wrong on the way (a failed task, lost members, a partition that
    failed); without one, a share of failed members above the partner's failure budget is one.
    ``stopped_by`` is the signal that stopped the run (SIGINT or SIGTERM), if one did. ``extra``
    goes into the summary as it is (e.g. how a cluster ran the run).
    """
    figures = merge(results)
    by_status = figures["ledger"]["members_by_status"]
    if stopped_by is not None:
        exit_code, state = 128 + stopped_by, "interrupted"
    elif error is not None:
        exit_code, state = error.exit_code, "failed"
    else:
        exit_code, state = ExitCode.OK, "ok"
        failed = sum(by_status.get(s, 0) for s in FAILED)
        scored = sum(by_status.values()) - by_status.get(Status.NO_TRANSACTIONS, 0)
        if scored and failed / scored > config.failure_budget:
            error = FailureBudgetExceeded(failed, scored, config.failure_budget)
            exit_code, state = error.exit_code, "failed"
    export_tables(config, run_dir)
    summary = _summary(
        config,
        run_dir=run_dir,
        as_of=as_of,
        figures=figures,
        wall_s=wall_s,
        state=state,
        exit_code=exit_code,
        error=error,
        config_hash=config_hash,
        started_at=started_at,
        resume=resume,
        partitions=len(results),
    )
    summary.update(extra or {})
    write_json(run_dir / "summary.json", summary, mode=config.output.file_mode)
    if error is not None:
        log.error("run failed (exit %d): %s", exit_code, error, extra={"exit_code": exit_code})
    return RunReport(run_dir, summary, exit_code, error)


def export_tables(config: PartnerConfig, run_dir: Path) -> None:
    """Write the tables people open: ``offers.csv`` (when the config's formats say so) and
    ``rejects.csv``, each one file over every partition's part, streamed."""
    mode = config.output.file_mode
    if "csv" in config.output.formats:
        offers = pl.scan_parquet(run_dir / "offers.parquet").sort("member_id")
        atomic_write(run_dir / "offers.csv", offers.sink_csv, mode=mode)
    rejects = pl.scan_parquet(run_dir / "rejects.parquet")
    order = ["file", "line"] if "file" in rejects.collect_schema().names() else ["line"]
    atomic_write(run_dir / "rejects.csv", rejects.sort(order).sink_csv, mode=mode)


def record_failure(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    error: BaseException,
    read: ReadResult | None = None,
    wall_s: float = 0.0,
    config_hash: str | None = None,
) -> dict[str, Any]:
    """Leave the summary (status ``failed``, the error, the row ledger if the input was read)
    of a run that failed before writing its own; log the error at ERROR with an ``exit_code``
    (the command line prints it itself). A summary that cannot be written is only logged."""
    exit_code = error.exit_code if isinstance(error, OfferflowError) else ExitCode.INTERNAL
    internal = None if isinstance(error, OfferflowError) else error
    log.error(
        "run failed (exit %d): %s",
        exit_code,
        error,
        exc_info=internal,
        extra={"exit_code": exit_code},
    )
    started_at = time.time() - wall_s
    result = partition_result(0, run_dir=run_dir, read=read, metrics=None, started_at=started_at)
    summary = _summary(
        config,
        run_dir=run_dir,
        as_of=as_of,
        figures=merge([result]),
        wall_s=wall_s,
        state="failed",
        exit_code=exit_code,
        error=error,
        config_hash=config_hash or config.fingerprint(),
        started_at=started_at,
        resume=False,
        partitions=0,
    )
    try:
        write_json(run_dir / "summary.json", summary, mode=config.output.file_mode)
    except OutputError as exc:
        log.error("the summary of the failed run was not written: %s", exc)
    return summary


def _dag(config: PartnerConfig) -> dict[str, list[str]] | None:
    """Each task's upstream tasks; None for a graph that is no DAG (the error says so)."""
    try:
        return {name: list(after) for name, (_, after) in workflow_graph(config).items()}
    except OfferflowError:
        return None


def run_until_done(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult | None = None,
    concurrency: int | None = None,
    hooks: Sequence[Hook] = (),
    progress: Progress | None = None,
    resume: bool = False,
    before_exit: Callable[[], None] = lambda: None,
    config_hash: str | None = None,
) -> RunReport:
    """Run the pipeline in a new event loop (uvloop when installed) until it is done.

    The first SIGINT/SIGTERM stops it gracefully; a second calls ``before_exit`` and exits the
    process at once. The garbage collector is tuned for the run meanwhile.
    """

    async def main() -> RunReport:
        shutdown = Shutdown()
        outcome: RunReport | Exception
        async with anyio.create_task_group() as group:
            group.start_soon(partial(watch_signals, shutdown, before_exit=before_exit))
            try:
                outcome = await run_pipeline(
                    config,
                    run_dir=run_dir,
                    as_of=as_of,
                    read=read,
                    concurrency=concurrency,
                    hooks=hooks,
                    shutdown=shutdown,
                    resume=resume,
                    progress=progress,
                    config_hash=config_hash,
                )
            except Exception as exc:  # raised below, outside the group, as itself
                outcome = exc
            group.cancel_scope.cancel()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with _collector_tuned_for_a_run():
        return anyio.run(main, backend_options=loop_options())


def loop_options() -> dict[str, Any]:
    """Run on uvloop when it is installed (it is, with uvicorn[standard]): less CPU per request."""
    try:
        import uvloop
    except ImportError:
        return {}
    return {"loop_factory": uvloop.new_event_loop}


@contextlib.contextmanager
def _collector_tuned_for_a_run() -> Iterator[None]:
    """The cyclic garbage collector set for a run's allocation pattern, restored afterwards.

    A run allocates a few short-lived objects per call and member, almost none in cycles, so
    CPython's default (a young collection every 700 allocations) spends about a tenth of a
    run's CPU scanning. Objects alive at the start (modules, config) are left out of the scans.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _summary(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    figures: dict[str, Any],
    wall_s: float,
    state: str,
    exit_code: int,
    error: BaseException | None,
    config_hash: str,
    started_at: float,
    resume: bool,
    partitions: int,
) -> dict[str, Any]:
    finished_at = time.time()
    ledger = figures["ledger"]
    by_status = ledger["members_by_status"]
    unscored = (Status.NO_TRANSACTIONS, Status.INTERRUPTED)
    scored = sum(n for status, n in by_status.items() if status not in unscored)
    session = {
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "status": state,
        "exit_code": exit_code,
        "resumed": resume,
    }
    return {
        "run_id": run_dir.name,
        "partner": config.partner,
        "as_of": as_of.isoformat(),
        "input": str(config.input.path),
        "config_hash": config_hash,
        "versions": {
            "offerflow": metadata.version("offerflow"),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "httptools": metadata.version("httptools"),
        },
        "status": state,
        "exit_code": exit_code,
        "error": None if error is None else describe_error(error),
        "started_at": session["started_at"],
        "finished_at": session["finished_at"],
        "sessions": [*(_sessions(run_dir) if resume else []), session],
        "ledger": ledger,
        "offers_by_type": figures["offers_by_type"],
        "wall_s": round(wall_s, 4),
        "members_scored": scored,
        "members_per_s": round(scored / wall_s, 1) if wall_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "partitions": partitions,
        "tasks": {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in task.items()}
            for name, task in figures["tasks"].items()
        },
        "dag": _dag(config),
        "endpoints": {e: figures["endpoints"][e] for e in _names(config, figures["endpoints"])},
    }


def _names(config: PartnerConfig, endpoints: Mapping[str, Any]) -> list[str]:
    return [e.name for e in config.endpoints if e.name in endpoints]


def _sessions(run_dir: Path) -> list[dict[str, Any]]:
    """The sessions an earlier summary of the run recorded (none if it has no summary yet)."""
    try:
        earlier = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    sessions = earlier.get("sessions")
    return list(sessions) if isinstance(sessions, list) else []


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
