"""A run on a Dask cluster, driven from here: split, score every partition, finish.

The driver never holds the input: the split runs on the cluster, a task per input file, and
so does every partition (:mod:`~offerflow.distributed.scoring`). It checks the endpoints'
contracts and the reject rate before any model call, follows the partitions as they finish,
and finishes the run as a run in one process does (``finish_run``: the summary merged from the
partitions' results, the exports, the exit code).

A partition that keeps killing workers (Dask's ``allowed-failures``) ends with its members
recorded as ``partition_failed``; the run fails (exit 1) and can be resumed. SIGINT/SIGTERM
ask every partition to stop taking members (a cluster event they watch), wait for them to
commit, record the members of partitions that never started as ``interrupted``, and exit
130/143: ``--resume`` finishes the run, skipping the partitions that are done.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from offerflow.config import PartnerConfig
from offerflow.distributed.cluster import Cluster, open_cluster, shared_concurrency
from offerflow.distributed.scoring import PartitionTask, score_partition
from offerflow.distributed.split import (
    SPLIT,
    SplitResult,
    SplitTask,
    bucket_sources,
    fetch_buckets,
    split_file,
)
from offerflow.errors import OfferflowError, UsageError
from offerflow.pipeline import (
    PartitionResult,
    RejectSample,
    RunReport,
    Status,
    check_endpoint_contracts,
    check_rejects,
    finish_run,
    read_sources,
    record_failure,
    record_members,
    source_columns,
    workflow_order,
    write_json,
)
from offerflow.pipeline.partition import RESULTS
from offerflow.pipeline.storage import expand, fetch_tree, is_remote, join, remove_tree

__all__ = ["DaskOptions", "run_on_dask"]

log = logging.getLogger(__name__)

#: partitions per worker thread, unless the run says how many
PARTITIONS_PER_THREAD = 4
#: what the split wrote, so that a resume does not split again (beside the partitions' results,
#: which a resumed run fetches, not in the split's directory, which it leaves on the store)
_SPLIT_DONE = Path(RESULTS) / "split.json"


@dataclass(frozen=True, slots=True)
class DaskOptions:
    """How a run uses Dask: a scheduler's address (None: a local cluster of ``workers``
    processes), and how many partitions (None: a few per worker thread)."""

    scheduler: str | None = None
    workers: int | None = None
    partitions: int | None = None


def run_on_dask(
    config: PartnerConfig,
    *,
    run_dir: Path,
    run_location: str,
    as_of: datetime,
    options: DaskOptions,
    config_hash: str,
    resume: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    on_partition: Callable[[PartitionResult], None] | None = None,
) -> RunReport:
    """Run ``config`` on a Dask cluster into ``run_location`` (``run_dir`` locally, or an object
    store URL whose local staging ``run_dir`` is); ``progress(done, partitions, scored)`` is told
    whenever a partition finishes, and ``on_partition`` is given the result of every partition
    this session ends (e.g. :meth:`~offerflow.pipeline.LiveMetrics.partition_done`)."""
    started, started_at = time.perf_counter(), time.time()
    shutdown = _Stop()
    try:
        workflow_order(config)
        anyio.run(check_endpoint_contracts, config)
        with _signals(shutdown), open_cluster(options.scheduler, options.workers) as cluster:
            # the workers' warnings and errors (a failed attempt, a stopping partition) land
            # here, in run.log, as a run in one process logs them
            cluster.client.forward_logging("offerflow", level=logging.WARNING)
            _check_locations(config, run_location, cluster)
            count = _partition_count(run_dir, options, cluster, resume)
            inputs = expand(str(config.input.path))
            if not inputs:
                raise UsageError(f"no input file at {config.input.path}")
            _split(config, cluster, run_dir, run_location, inputs, count, as_of, resume)
            shares = shared_concurrency(config, cluster.threads)
            described = cluster.describe()
            results, error = _score(
                shares,
                cluster,
                run_dir=run_dir,
                run_location=run_location,
                as_of=as_of,
                inputs=inputs,
                count=count,
                resume=resume,
                shutdown=shutdown,
                progress=progress,
                on_partition=on_partition or _ignore,
            )
    except Exception as exc:
        record_failure(
            config,
            run_dir=run_dir,
            as_of=as_of,
            error=exc,
            wall_s=time.perf_counter() - started,
            config_hash=config_hash,
        )
        raise
    if is_remote(run_location):
        fetch_tree(run_location, run_dir, skip=(SPLIT,))  # the partitions' parts, for the exports
    report = finish_run(
        config,
        run_dir=run_dir,
        as_of=as_of,
        results=results,
        stopped_by=shutdown.signal,
        error=error,
        wall_s=time.perf_counter() - started,
        started_at=started_at,
        config_hash=config_hash,
        resume=resume,
        extra={"backend": "dask", "cluster": described},
    )
    if shutdown.signal is None and all(result.done for result in results):
        # every member is final: no resume will read the buckets, a copy of the whole input
        remove_tree(join(run_location, SPLIT))
    return report


def _check_locations(config: PartnerConfig, run_location: str, cluster: Cluster) -> None:
    """On a cluster of other machines, local paths are not where the workers can see them."""
    if not cluster.remote:
        return
    for name, location in (("input.path", str(config.input.path)), ("--out", run_location)):
        if not is_remote(location):
            log.warning(
                "%s is a local path (%s): the workers of a remote cluster read and write it on "
                "their own machines; give an object store URL (s3://…) unless they share it",
                name,
                location,
            )


def _partition_count(run_dir: Path, options: DaskOptions, cluster: Cluster, resume: bool) -> int:
    """The partitions of the run: what an earlier session split into, else the options'."""
    done = run_dir / _SPLIT_DONE
    if resume and done.exists():
        count: int = json.loads(done.read_text())["partitions"]
        return count
    if resume and any(_earlier_results(run_dir)):
        return 1  # begun in one process: one partition, which keeps what it committed
    if options.partitions is not None:
        if options.partitions < 1:
            raise UsageError(f"--partitions must be at least 1, got {options.partitions}")
        return options.partitions
    return PARTITIONS_PER_THREAD * cluster.threads


def _split(
    config: PartnerConfig,
    cluster: Cluster,
    run_dir: Path,
    run_location: str,
    inputs: Sequence[str],
    count: int,
    as_of: datetime,
    resume: bool,
) -> None:
    """Split the input on the cluster (unless a resumed run's split is done); stop on too many
    rejects before any model call."""
    done = run_dir / _SPLIT_DONE
    if resume and done.exists():
        return
    source = config.input
    tasks = [
        SplitTask(
            index,
            location,
            source_columns(source.columns),
            source.format,
            count,
            run_location,
            as_of,
            dict(source.type_aliases),
            source.timestamp_format,
            source.csv,
            source.timezone,
        )
        for index, location in enumerate(inputs)
    ]
    log.info("splitting %d input files into %d partitions", len(tasks), count)
    futures = cluster.client.map(split_file, tasks, pure=False)
    results: list[SplitResult] = cluster.client.gather(futures)
    _check_rejects(config, results, as_of)
    done.parent.mkdir(parents=True, exist_ok=True)
    write_json(done, {"partitions": count, "inputs": list(inputs)}, mode=config.output.file_mode)


def _check_rejects(config: PartnerConfig, results: Sequence[SplitResult], as_of: datetime) -> None:
    import polars as pl

    several = len(results) > 1
    examples = [
        {"file": result.location, **example} if several else example
        for result in results
        for example in result.examples
    ]
    by_reason: dict[str, int] = {}
    for result in results:
        for reason, count in result.rejects_by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    sample = RejectSample(
        rows_in=sum(r.rows for r in results),
        rows_used=sum(r.usable for r in results),
        rejects_by_reason=by_reason,
        rejects=pl.DataFrame(examples, infer_schema_length=None),
    )
    check_rejects(
        sample,
        limit=config.input.max_reject_rate,
        path=str(config.input.path),
        columns=config.input.columns,
        timestamp_format=config.input.timestamp_format,
        as_of=as_of,
        csv=config.input.csv,
    )


def _score(
    config: PartnerConfig,
    cluster: Cluster,
    *,
    run_dir: Path,
    run_location: str,
    as_of: datetime,
    inputs: Sequence[str],
    count: int,
    resume: bool,
    shutdown: _Stop,
    progress: Callable[[int, int, int], None] | None,
    on_partition: Callable[[PartitionResult], None],
) -> tuple[list[PartitionResult], OfferflowError | None]:
    """Score every partition not done yet; the results of all of them, and the error that
    failed the run, if any."""
    from distributed import Event, as_completed

    results: dict[int, PartitionResult] = {}
    if resume:
        results = {r.partition: r for r in _earlier_results(run_dir) if r.done}
    todo = [p for p in range(count) if p not in results]
    stop = f"offerflow-stop-{run_dir.name}-{time.time_ns()}"
    event = Event(stop, client=cluster.client)
    tasks = {
        cluster.client.submit(
            score_partition,
            PartitionTask(config, run_location, as_of, partition, list(inputs), stop, run_dir.name),
            key=f"offerflow-{run_dir.name}-p{partition:05d}-{time.time_ns()}",
            pure=False,
        ): partition
        for partition in todo
    }
    error: OfferflowError | None = None
    failed: list[int] = []
    scored = sum(_scored(r) for r in results.values())

    def unrun(partition: int, status: Status, reason: str) -> PartitionResult:
        """Record every member of a partition that did not run with ``status``."""
        read = _read_partition(config, run_dir, run_location, as_of, inputs, partition)
        return record_members(
            config, run_dir=run_dir, read=read, partition=partition, status=status, reason=reason
        )

    def stop_the_cluster() -> None:
        shutdown.wait()
        # running partitions stop taking members and commit; those yet to start score nobody
        # (nothing is cancelled: a partition keeps what it committed, whenever it stopped)
        event.set()

    threading.Thread(target=stop_the_cluster, name="offerflow-stop", daemon=True).start()
    for future in as_completed(list(tasks), with_results=False):
        partition = tasks[future]
        if future.cancelled():
            continue
        try:
            document = future.result()
        except Exception as exc:  # the partition could not be run: KilledWorker, a bug
            log.error("partition %d failed on the cluster: %s", partition, exc)
            failed.append(partition)
            results[partition] = unrun(
                partition,
                Status.PARTITION_FAILED,
                f"the cluster could not run partition {partition}: {exc}",
            )
            on_partition(results[partition])
            continue
        result = PartitionResult.of(
            {k: v for k, v in document.items() if k not in ("interrupted", "failure", "lost")}
        )
        results[partition] = result
        on_partition(result)
        if document["failure"] is not None and error is None:
            error = OfferflowError(f"partition {partition}: {document['failure']}")
        scored += _scored(result)
        if progress is not None:
            progress(len(results), count, scored)
        log.info("partition %d done: %d of %d partitions", partition, len(results), count)
    for partition in range(count):
        if partition not in results:  # its task was cancelled (by hand on the cluster)
            results[partition] = unrun(
                partition, Status.INTERRUPTED, "run stopped before this member was scored"
            )
            on_partition(results[partition])
    if failed and error is None:
        error = OfferflowError(
            f"partitions {', '.join(map(str, failed))} could not be run on the cluster: their "
            "members are partition_failed; --resume runs them again"
        )
    return [results[p] for p in range(count)], error


def _ignore(result: PartitionResult) -> None:
    """A partition's result no one asked for."""


def _scored(result: PartitionResult) -> int:
    unscored = (Status.NO_TRANSACTIONS, Status.INTERRUPTED)
    return sum(n for status, n in result.members_by_status.items() if status not in unscored)


def _earlier_results(run_dir: Path) -> Iterator[PartitionResult]:
    for path in sorted((run_dir / RESULTS).glob("part-*.json")):
        yield PartitionResult.of(json.loads(path.read_text(encoding="utf-8")))


def _read_partition(
    config: PartnerConfig,
    run_dir: Path,
    run_location: str,
    as_of: datetime,
    inputs: Sequence[str],
    partition: int,
) -> Any:
    """What a partition holds, read here from its buckets (its member ids and ledger)."""
    if is_remote(run_location):
        fetch_buckets(run_location, run_dir, partition, len(inputs))
    source = config.input
    return read_sources(
        bucket_sources(run_dir / SPLIT, partition, inputs),
        several=len(inputs) > 1,
        as_of=as_of,
        columns=source.columns,
        type_aliases=source.type_aliases,
        timestamp_format=source.timestamp_format,
        timezone=source.timezone,
        csv=source.csv,
    )


class _Stop:
    """The driver's stop request: set by a signal, waited for by a thread (no event loop)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def request(self, signum: int) -> None:
        """Ask the run to stop."""
        self.signal = signum
        self._event.set()

    def wait(self) -> None:
        """Wait until a stop is asked for."""
        self._event.wait()


@contextmanager
def _signals(shutdown: _Stop) -> Iterator[None]:
    """The first SIGINT/SIGTERM asks the run to stop; a second exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if shutdown.requested:
            raise SystemExit(128 + signum)
        log.warning(
            "%s: the partitions running finish their in-flight calls and commit; send it "
            "again to exit now",
            signal.Signals(signum).name,
        )
        shutdown.request(signum)

    before = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
