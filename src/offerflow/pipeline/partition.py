"""One partition of a run: its members scored end to end, its files written, its result.

This is the seam between a run and where it runs. A partition is a set of members with all
their rows (``offerflow.pipeline.inputs.partitions`` says which); :func:`run_partition` takes
what was read of them and runs the whole per-member pipeline — features, models, offer, the
offers and requests tables, the rejects — writing the partition's own part of each table
(``offers.parquet/part-00007.parquet``, …) and returning its :class:`PartitionResult`. A run in
one process is this function over one partition; a cluster runs it on its workers, a partition
each (``offerflow.distributed``). A partition that runs again replaces its own parts, so a
re-executed partition never duplicates a member.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Hook, MetricsHook
from offerflow.errors import OfferflowError, OutputError, TaskFailedError, UsageError
from offerflow.pipeline.inputs import ReadResult
from offerflow.pipeline.live import LiveMetrics
from offerflow.pipeline.members import Member, Status
from offerflow.pipeline.offers import Recorder, offers_schema
from offerflow.pipeline.outputs import (
    PARTS,
    ChunkedTable,
    PartitionResult,
    RequestLog,
    atomic_write,
    make_dir,
    task_figures,
    write_json,
)
from offerflow.pipeline.stopping import Shutdown, cancel_after_grace
from offerflow.pipeline.workflow import build_workflow, client_for, feature_registry

__all__ = [
    "FINAL",
    "TABLES",
    "PartitionOutcome",
    "Progress",
    "part_name",
    "partition_result",
    "record_members",
    "run_partition",
]

log = logging.getLogger(__name__)

#: told how many members are recorded so far, and of how many (None until the input is read)
Progress = Callable[[int, int | None], None]
#: how often ``progress`` is told
_PROGRESS_EVERY_S = 0.25
#: statuses a resumed run does not score again
FINAL = (Status.OK, Status.NO_TRANSACTIONS)
#: the tables of a run, each a directory of parts (a Parquet dataset), one part per partition
TABLES = ("offers.parquet", "requests.parquet", "rejects.parquet")
#: where a partition's result is kept, for the run's summary and for a resume
RESULTS = ".partitions"


def part_name(partition: int) -> str:
    """The file name of a partition's part of a table: ``part-00007.parquet``."""
    return f"part-{partition:05d}.parquet"


@dataclass(frozen=True, slots=True)
class PartitionOutcome:
    """How a partition's run ended: its result, and what stopped or broke it, if anything."""

    result: PartitionResult
    #: the run was asked to stop: some members are ``interrupted``
    interrupted: bool
    #: a task of the workflow failed as a whole (its members are recorded all the same)
    failure: TaskFailedError | None
    #: members that got no row without a stop: a bug, recorded as ``model_error``
    lost: int


async def run_partition(
    config: PartnerConfig,
    *,
    run_dir: Path,
    as_of: datetime,
    read: ReadResult,
    partition: int = 0,
    hooks: Sequence[Hook] = (),
    shutdown: Shutdown | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> PartitionOutcome:
    """Score the members ``read`` holds and write partition ``partition``'s parts of the run.

    With ``resume``, members the partition already committed as ``ok`` or ``no_transactions``
    (in an earlier session) are not scored again. The endpoints' contracts are the run's to
    check before. A config error or an output error the workflow meets is raised; any other
    failure of a task ends the partition with its members recorded, and is in the outcome.
    A :class:`~offerflow.pipeline.live.LiveMetrics` among the hooks also counts the partition's
    rows, the members it records and the attempts it makes. ``run_id`` names the run in every
    request's ``X-Request-ID`` (None: ``run_dir``'s name, as a run's directory is named after it).
    """
    started_at = time.time()
    shutdown = shutdown or Shutdown()
    metrics = MetricsHook()
    output = config.output
    registry = feature_registry(config)  # loads the partner's feature modules, once
    parts = run_dir / PARTS / f"p{partition:05d}"
    modes = {"file_mode": output.file_mode, "dir_mode": output.dir_mode}
    live = next((hook for hook in hooks if isinstance(hook, LiveMetrics)), None)
    table = ChunkedTable if live is None else live.offers_table
    offers = table(
        parts, "offers", offers_schema(config, registry), chunk_rows=output.chunk_rows, **modes
    )
    requests = RequestLog(parts, chunk_rows=4 * output.chunk_rows, **modes)
    targets = {table: run_dir / table / part_name(partition) for table in TABLES}
    skip = None
    if resume:
        offers.adopt(targets["offers.parquet"])
        requests.adopt(targets["requests.parquet"])
        skip = _final_members(offers)
        log.info("partition %d: %d members already final", partition, skip.len())
    recorder = Recorder(offers)
    failure: TaskFailedError | None = None
    attempts = requests if live is None else live.attempts(requests)
    if live is not None:
        live.input_read(read)
    async with client_for(
        config, attempts=attempts, stopping=shutdown.stopping, run_id=run_id or run_dir.name
    ) as client:
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
    offers.finish(targets["offers.parquet"], sort_by="member_id", unique_by="member_id")
    requests.finish(targets["requests.parquet"])
    _write_rejects(read.rejects, targets["rejects.parquet"], output.file_mode, output.dir_mode)
    result = partition_result(
        partition,
        run_dir=run_dir,
        read=read,
        metrics=metrics,
        started_at=started_at,
    )
    _write_result(run_dir, result, output.file_mode, output.dir_mode)
    try:
        offers.discard_parts()
        requests.discard_parts()
    except OSError as exc:  # every output is written: the chunks are only in the way
        log.warning("committed chunks left in %s: %s", parts, exc.strerror or exc)
    return PartitionOutcome(result, shutdown.requested, failure, lost)


def record_members(
    config: PartnerConfig,
    *,
    run_dir: Path,
    read: ReadResult,
    partition: int,
    status: Status,
    reason: str,
) -> PartitionResult:
    """Write a partition that was not scored: each of its members with ``status`` and
    ``reason`` (those without a usable transaction ``no_transactions``), its rejects, its
    result. For a partition the run could not run, or never started."""
    started_at = time.time()
    output = config.output
    targets = {table: run_dir / table / part_name(partition) for table in TABLES}
    parts = run_dir / PARTS / f"p{partition:05d}"
    offers = ChunkedTable(
        parts,
        "offers",
        offers_schema(config, feature_registry(config)),
        chunk_rows=output.chunk_rows,
        file_mode=output.file_mode,
        dir_mode=output.dir_mode,
    )
    recorder = Recorder(offers)
    with_transactions = set(read.transactions.get_column("member_id").unique().to_list())
    for member_id in read.members:
        if member_id in with_transactions:
            recorder.record(Member(member_id, {}), status, reason)
        else:
            recorder.record(Member(member_id, {}), Status.NO_TRANSACTIONS)
    offers.finish(targets["offers.parquet"], sort_by="member_id", unique_by="member_id")
    offers.discard_parts()
    _write_rejects(read.rejects, targets["rejects.parquet"], output.file_mode, output.dir_mode)
    result = partition_result(
        partition, run_dir=run_dir, read=read, metrics=None, started_at=started_at
    )
    _write_result(run_dir, result, output.file_mode, output.dir_mode)
    return result


def partition_result(
    partition: int,
    *,
    run_dir: Path,
    read: ReadResult | None,
    metrics: MetricsHook | None,
    started_at: float,
) -> PartitionResult:
    """What a partition's parts hold, with its read's ledger and its tasks' figures."""
    offers = run_dir / "offers.parquet" / part_name(partition)
    requests = run_dir / "requests.parquet" / part_name(partition)
    return PartitionResult(
        partition=partition,
        rows_in=0 if read is None else read.rows_in,
        rows_used=0 if read is None else read.rows_used,
        rejects_by_reason={} if read is None else read.rejects_by_reason,
        members_in=0 if read is None else read.members.len(),
        members_by_status=_counts(offers, "status"),
        offers_by_type=_counts(offers, "offer"),
        tasks={} if metrics is None else task_figures(metrics, started_at),
        endpoints=_endpoint_figures(requests),
        started_at=started_at,
        finished_at=time.time(),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )


def _write_result(run_dir: Path, result: PartitionResult, file_mode: int, dir_mode: int) -> None:
    """Keep the partition's result beside its parts, for the run's summary and a resume."""
    results = run_dir / RESULTS
    try:
        make_dir(results, dir_mode, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create: {exc.strerror}", path=results) from exc
    write_json(results / f"part-{result.partition:05d}.json", result.document(), mode=file_mode)


def _write_rejects(rejects: pl.DataFrame, target: Path, file_mode: int, dir_mode: int) -> None:
    """The partition's rejected rows as its part of ``rejects.parquet``."""
    try:
        make_dir(target.parent, dir_mode, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create: {exc.strerror}", path=target.parent) from exc
    atomic_write(target, rejects.write_parquet, mode=file_mode)


async def _report_progress(progress: Progress, recorder: Recorder, done_before: int) -> None:
    """Tell ``progress`` what the recorder has recorded, a few times a second, until cancelled."""
    while True:
        read = recorder.read
        total = None if read is None else read.members.len() - done_before
        progress(recorder.table.rows, total)
        await anyio.sleep(_PROGRESS_EVERY_S)


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
    """Rows of a parquet file (or dataset) by the values of one column, sorted by value."""
    if not path.exists():
        return {}
    table = pl.scan_parquet(path).group_by(column).len().sort(column).collect()
    return {value: count for value, count in table.iter_rows() if value is not None}


def _endpoint_figures(path: Path) -> dict[str, dict[str, int]]:
    """Per endpoint, from the requests table: HTTP attempts, those that failed, and retries.

    Its latency is the task's of the same name (``tasks``: a member's time in it, retries
    included); every attempt's own is in the requests table.
    """
    if not path.exists():
        return {}
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


def describe_error(error: BaseException) -> str:
    """An error as a summary states it: an offerflow error's message, or a bug's class too."""
    return str(error) if isinstance(error, OfferflowError) else f"{type(error).__name__}: {error}"
