"""One run of the offer workflow: its directory, its outputs, its summary, its stop and resume."""

from __future__ import annotations

import contextlib
import gc
import logging
import platform
import re
import resource
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Hook, MetricsHook
from offerflow.errors import (
    ContractError,
    ExitCode,
    FailureBudgetExceeded,
    OfferflowError,
    OutputError,
    TaskFailedError,
    UsageError,
)
from offerflow.pipeline.endpoints import check_contracts
from offerflow.pipeline.inputs import ReadResult
from offerflow.pipeline.members import Member, Status
from offerflow.pipeline.outputs import ChunkedTable, RequestLog, atomic_write, make_dir, write_json
from offerflow.pipeline.stopping import Shutdown, cancel_after_grace, watch_signals
from offerflow.pipeline.workflow import (
    Recorder,
    build_workflow,
    check_input,
    client_for,
    feature_registry,
    offers_schema,
    read_input,
)

__all__ = [
    "RUN_ID",
    "Progress",
    "RunReport",
    "check_run_id",
    "new_run_dir",
    "record_failure",
    "run_pipeline",
    "run_until_done",
]

log = logging.getLogger(__name__)

#: told how many members are recorded so far, and of how many (None until the input is read)
Progress = Callable[[int, int | None], None]
#: how often ``progress`` is told
_PROGRESS_EVERY_S = 0.25

#: statuses a resumed run does not score again
FINAL = (Status.OK, Status.NO_TRANSACTIONS)
_FAILED = (
    Status.MODEL_ERROR,
    Status.INVALID_RESPONSE,
    Status.ENDPOINT_UNAVAILABLE,
    Status.TLS_ERROR,
)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a finished run leaves behind: where, its summary and the exit code it earned."""

    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    error: OfferflowError | None = None


#: a run id: one path component of 1 to 128 letters, digits, ``.``, ``_`` and ``-``, starting
#: with a letter or a digit (never ``.``, ``..``, a hidden name or an option-like ``-x``)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it matches :data:`RUN_ID`; else a ValueError saying what a run id is."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"{run_id!r} is not a run id: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return run_id


def new_run_dir(config: PartnerConfig, out: Path | None = None, run_id: str | None = None) -> Path:
    """Create ``<out>/<partner>/<run_id>/``, failing (exit 4) before any work when it can't.

    A ``run_id`` that is not one safe path component (:data:`RUN_ID`) is a UsageError. The run
    directory gets the config's ``output.dir_mode`` whatever the umask (the directories above it,
    shared by runs, are made as the umask says).
    """
    if run_id is None:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_dir = (out or config.output.dir) / config.partner / run_id
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        make_dir(run_dir, config.output.dir_mode)
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
    checked first, before anything else. With ``resume``, members already
    committed there as ``ok`` or ``no_transactions`` are not scored again, and the run's files
    are completed in place. ``progress`` is told a few times a second how many members are
    recorded, and of how many once the input is read. A run that fails before its summary is
    written (bad input, a contract mismatch, a cycle, …) leaves one all the same, with status
    ``failed`` and the error, which it also logs (see :func:`record_failure`).
    ``config_hash`` is the summary's (the fingerprint in ``run.json``; by default ``config``'s).
    """
    started = time.perf_counter()
    config_hash = config_hash or config.fingerprint()
    try:
        if read is None:
            read = read_input(config, as_of)
            check_input(config, read, as_of)
        return await _run_pipeline(
            config,
            run_dir=run_dir,
            as_of=as_of,
            read=read,
            concurrency=concurrency,
            hooks=hooks,
            shutdown=shutdown or Shutdown(),
            resume=resume,
            progress=progress,
            started=started,
            config_hash=config_hash,
        )
    except Exception as error:
        wall_s = time.perf_counter() - started
        record_failure(
            config,
            run_dir=run_dir,
            as_of=as_of,
            error=error,
            read=read,
            wall_s=wall_s,
            config_hash=config_hash,
        )
        raise


async def _run_pipeline(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult,
    concurrency: int | None,
    hooks: Sequence[Hook],
    shutdown: Shutdown,
    resume: bool,
    progress: Progress | None,
    started: float,
    config_hash: str,
) -> RunReport:
    config = _with_concurrency(config, concurrency)
    metrics = MetricsHook()
    chunk_rows = config.output.chunk_rows
    registry = feature_registry(config)  # loads the partner's feature modules, once
    schema = offers_schema(config, registry)
    file_mode, dir_mode = config.output.file_mode, config.output.dir_mode
    offers = ChunkedTable(
        run_dir, "offers", schema, chunk_rows=chunk_rows, file_mode=file_mode, dir_mode=dir_mode
    )
    requests = RequestLog(
        run_dir, chunk_rows=4 * chunk_rows, file_mode=file_mode, dir_mode=dir_mode
    )
    skip = None
    if resume:
        offers.adopt(run_dir / "offers.parquet")
        requests.adopt(run_dir / "requests.parquet")
        skip = _final_members(offers)
        log.info("resuming %s: %d members already final", run_dir, skip.len())
    recorder = Recorder(offers)
    failure: TaskFailedError | None = None
    async with client_for(config, attempts=requests, stopping=shutdown.stopping) as client:
        workflow = build_workflow(
            config,
            as_of=as_of,
            client=client,
            recorder=recorder,
            registry=registry,
            skip=skip,
            stop=shutdown.stopping.is_set,
            already_read=read,
        )
        workflow.validate()
        contracts = await check_contracts(config, client)
        for problem in contracts.unreachable:
            log.warning("contract not checked: %s", problem)
        if contracts.mismatches:
            raise ContractError(contracts.mismatches)
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as guard:
            guard.start_soon(cancel_after_grace, shutdown, scope, config.shutdown_grace_s)
            if progress is not None:
                done_before = 0 if skip is None else skip.len()
                guard.start_soon(_report_progress, progress, recorder, done_before)
            try:
                with scope:
                    await workflow.run(hooks=[metrics, *hooks])
            except TaskFailedError as exc:
                failure = exc
            guard.cancel_scope.cancel()
    if failure is not None and isinstance(failure.cause, UsageError | OutputError):
        raise failure.cause from failure

    lost = _close_member_ledger(recorder, shutdown)
    offers.finish(config.output.formats, sort_by="member_id", unique_by="member_id")
    requests.finish()
    if recorder.read is not None:
        atomic_write(run_dir / "rejects.csv", recorder.read.rejects.write_csv, mode=file_mode)

    error: OfferflowError | None = failure
    if lost and error is None:
        error = OfferflowError(f"{lost} members had no result recorded (internal error)")
    by_status = _counts(run_dir / "offers.parquet", "status")
    if shutdown.requested:
        exit_code, state = shutdown.exit_code, "interrupted"
    elif error is not None:
        exit_code, state = error.exit_code, "failed"
    else:
        exit_code, state = ExitCode.OK, "ok"
        failed = sum(by_status.get(s, 0) for s in _FAILED)
        scored = sum(by_status.values()) - by_status.get(Status.NO_TRANSACTIONS, 0)
        if scored and failed / scored > config.failure_budget:
            error = FailureBudgetExceeded(failed, scored, config.failure_budget)
            exit_code, state = error.exit_code, "failed"
    summary = _summary(
        config,
        run_dir=run_dir,
        as_of=as_of,
        read=recorder.read,
        by_status=by_status,
        metrics=metrics,
        wall_s=time.perf_counter() - started,
        state=state,
        exit_code=exit_code,
        error=error,
        config_hash=config_hash,
    )
    write_json(run_dir / "summary.json", summary, mode=file_mode)
    if error is not None:
        log.error("run failed (exit %d): %s", exit_code, error, extra={"exit_code": exit_code})
    try:
        offers.discard_parts()
        requests.discard_parts()
    except OSError as exc:  # every output is written: the chunks are only in the way
        log.warning("committed chunks left in %s: %s", run_dir / ".parts", exc.strerror or exc)
    return RunReport(run_dir, summary, exit_code, error)


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
    """Leave the summary of a run that failed before writing its own, and log the error.

    The summary has status ``failed``, the error and its exit code, and the row ledger when the
    input was read. The error is logged at ERROR with an ``exit_code`` attribute (the command
    line prints it itself). A summary that cannot be written is logged, not raised: the error
    that ended the run is the one to report.
    """
    exit_code = error.exit_code if isinstance(error, OfferflowError) else ExitCode.INTERNAL
    internal = None if isinstance(error, OfferflowError) else error
    log.error(
        "run failed (exit %d): %s",
        exit_code,
        error,
        exc_info=internal,
        extra={"exit_code": exit_code},
    )
    offers = run_dir / "offers.parquet"
    summary = _summary(
        config,
        run_dir=run_dir,
        as_of=as_of,
        read=read,
        by_status=_counts(offers, "status") if offers.exists() else {},
        metrics=None,
        wall_s=wall_s,
        state="failed",
        exit_code=exit_code,
        error=error,
        config_hash=config_hash or config.fingerprint(),
    )
    try:
        write_json(run_dir / "summary.json", summary, mode=config.output.file_mode)
    except OutputError as exc:
        log.error("the summary of the failed run was not written: %s", exc)
    return summary


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
        return anyio.run(main, backend_options=_loop_options())


def _loop_options() -> dict[str, Any]:
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


async def _report_progress(progress: Progress, recorder: Recorder, done_before: int) -> None:
    """Tell ``progress`` what the recorder has recorded, a few times a second, until cancelled."""
    while True:
        read = recorder.read
        total = None if read is None else read.members.len() - done_before
        progress(recorder.table.rows, total)
        await anyio.sleep(_PROGRESS_EVERY_S)


def _with_concurrency(config: PartnerConfig, concurrency: int | None) -> PartnerConfig:
    if concurrency is None:
        return config
    models = tuple(m.model_copy(update={"concurrency": concurrency}) for m in config.models)
    offer = config.offer.model_copy(update={"concurrency": concurrency})
    return config.model_copy(update={"models": models, "offer": offer})


def _final_members(offers: ChunkedTable) -> pl.Series:
    """Members an earlier session committed with a status that needs no more work."""
    return (
        offers.committed()
        .filter(pl.col("status").is_in([str(s) for s in FINAL]))
        .select(pl.col("member_id").unique())
        .collect()
        .get_column("member_id")
    )


def _close_member_ledger(recorder: Recorder, shutdown: Shutdown) -> int:
    """Give every input member without a row one: ``interrupted`` if the run was stopped.

    Returns how many members were missing without a stop: those would have been lost, which is
    a bug; they are recorded as ``model_error`` and the run exits 1.
    """
    read = recorder.read
    if read is None:
        return 0
    recorder.table.flush()
    recorded = recorder.table.committed().select("member_id").unique().collect()
    missing = read.members.to_frame("member_id").join(recorded, on="member_id", how="anti")
    status = Status.INTERRUPTED if shutdown.requested else Status.MODEL_ERROR
    reason = (
        "run stopped before this member was scored"
        if shutdown.requested
        else "no result recorded (internal error)"
    )
    for member_id in missing.get_column("member_id"):
        recorder.record(Member(member_id, {}), status, reason)
    return 0 if shutdown.requested else missing.height


def _counts(path: Path, column: str) -> dict[str, int]:
    """Rows of a parquet file by the values of one column, sorted by value."""
    table = pl.scan_parquet(path).group_by(column).len().sort(column).collect()
    return {value: count for value, count in table.iter_rows() if value is not None}


def _summary(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult | None,
    by_status: dict[str, int],
    metrics: MetricsHook | None,
    wall_s: float,
    state: str,
    exit_code: int,
    error: BaseException | None,
    config_hash: str,
) -> dict[str, Any]:
    members_in = 0 if read is None else read.members.len()
    requests, offers = run_dir / "requests.parquet", run_dir / "offers.parquet"
    figures = _endpoint_figures(requests) if requests.exists() else {}
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
        "error": None if error is None else _error_text(error),
        "ledger": {
            "rows_in": 0 if read is None else read.rows_in,
            "rows_used": 0 if read is None else read.rows_used,
            "rows_rejected": 0 if read is None else read.rows_rejected,
            "rejects_by_reason": {} if read is None else read.rejects_by_reason,
            "members_in": members_in,
            "members_by_status": by_status,
            "balanced": sum(by_status.values()) == members_in,
        },
        "offers_by_type": _counts(offers, "offer") if offers.exists() else {},
        "wall_s": round(wall_s, 4),
        "members_per_s": round(members_in / wall_s, 1) if wall_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tasks": {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.as_dict().items()}
            for name, m in (metrics.snapshot() if metrics is not None else {}).items()
        },
        "endpoints": {e.name: figures[e.name] for e in config.endpoints if e.name in figures},
    }


def _error_text(error: BaseException) -> str:
    """An error as the summary states it: an offerflow error's message, or a bug's class too."""
    return str(error) if isinstance(error, OfferflowError) else f"{type(error).__name__}: {error}"


def _endpoint_figures(path: Path) -> dict[str, dict[str, int]]:
    """Per endpoint, from the requests table: HTTP attempts, those that failed, and retries.

    Its latency is the task's of the same name (``tasks``: a member's time in it, retries
    included); every attempt's own is in the requests table.
    """
    table = (
        pl.scan_parquet(path)
        .group_by("endpoint")
        .agg(
            pl.len().alias("requests"),
            pl.col("error").is_not_null().sum().alias("errors"),
            (pl.col("attempt") > 1).sum().alias("retries"),
        )
        .collect()
    )
    return {row.pop("endpoint"): row for row in table.iter_rows(named=True)}
