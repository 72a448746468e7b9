"""A partition scored on a worker: its buckets read, :func:`run_partition`, its parts written.

The task is what the cluster runs, once per partition (again, elsewhere, when a worker dies on
it: the parts it writes are named by the partition, so a second attempt replaces the first's,
and members an attempt committed before dying are not scored again). With the run directory on
an object store, the task works in a scratch directory of the worker and publishes the
partition's parts when done.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from offerflow.config import PartnerConfig
from offerflow.distributed.split import SPLIT, bucket_sources, fetch_buckets
from offerflow.pipeline import (
    TABLES,
    PartitionOutcome,
    Shutdown,
    loop_options,
    read_sources,
    run_partition,
)
from offerflow.pipeline.partition import RESULTS
from offerflow.pipeline.storage import fetch_matching, fetch_tree, is_remote, join, publish_tree

__all__ = ["PartitionTask", "score_partition"]

log = logging.getLogger(__name__)

#: how often a partition looks whether the run was asked to stop
_STOP_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """Everything a worker needs to score one partition: picklable, no open resources."""

    config: PartnerConfig
    run_location: str
    as_of: datetime
    partition: int
    #: the input files, in order (their buckets are under ``<run>/.split/fNNNN``)
    inputs: Sequence[str]
    #: the name of the cluster event that asks the run to stop
    stop_event: str
    #: the run's id, for its requests' ``X-Request-ID`` (a worker's copy of a run on an object
    #: store is not named after it); empty: the run directory's name
    run_id: str = ""


def score_partition(task: PartitionTask) -> dict[str, Any]:
    """Score one partition (runs on a worker); the partition's result as JSON data, with
    ``interrupted`` and ``failure`` (the text of a task that failed as a whole, or None)."""
    with tempfile.TemporaryDirectory(prefix="offerflow-partition-") as scratch:
        remote = is_remote(task.run_location)
        run_dir = Path(scratch) / "run" if remote else Path(task.run_location)
        if remote:
            _fetch_partition(task, run_dir)
        config = task.config
        source = config.input
        read = read_sources(
            bucket_sources(run_dir / SPLIT, task.partition, task.inputs),
            several=len(task.inputs) > 1,
            as_of=task.as_of,
            columns=source.columns,
            type_aliases=source.type_aliases,
            timestamp_format=source.timestamp_format,
            timezone=source.timezone,
            csv=source.csv,
        )
        outcome = anyio.run(_score, task, run_dir, read, backend_options=loop_options())
        if remote:
            _publish_partition(task, run_dir)
    document = outcome.result.document()
    document["interrupted"] = outcome.interrupted
    document["failure"] = None if outcome.failure is None else str(outcome.failure)
    document["lost"] = outcome.lost
    return document


async def _score(task: PartitionTask, run_dir: Path, read: Any) -> PartitionOutcome:
    shutdown = Shutdown()
    if await anyio.to_thread.run_sync(_stop_is_set, task.stop_event):
        # started after the run was asked to stop: keep what an earlier attempt or session
        # committed, record the others as interrupted, score nobody
        shutdown.request(2)
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_for_stop, task.stop_event, shutdown)
        # a retried attempt skips what an earlier one committed: resume is always on
        outcome = await run_partition(
            task.config,
            run_dir=run_dir,
            as_of=task.as_of,
            read=read,
            partition=task.partition,
            shutdown=shutdown,
            resume=True,
            run_id=task.run_id or None,
        )
        group.cancel_scope.cancel()
    return outcome


def _stop_is_set(name: str) -> bool:
    """Whether the driver set the run's stop event on the cluster."""
    from distributed import Event

    return bool(Event(name).is_set())


async def _watch_for_stop(name: str, shutdown: Shutdown) -> None:
    """Ask the partition to stop once the driver sets the run's stop event on the cluster."""
    while not shutdown.requested:
        if await anyio.to_thread.run_sync(_stop_is_set, name):
            log.warning("the run is stopping: partition takes no new member")
            shutdown.request(2)
            return
        await anyio.sleep(_STOP_POLL_S)


def _fetch_partition(task: PartitionTask, run_dir: Path) -> None:
    """Fetch what a partition reads and resumes from: its buckets, parts, chunks, result."""
    run_dir.mkdir(parents=True)
    name = f"p{task.partition:05d}"
    fetch_buckets(task.run_location, run_dir, task.partition, len(task.inputs))
    for table in TABLES:
        fetch_matching(join(task.run_location, table), run_dir / table, f"part-{name[1:]}.")
    fetch_tree(join(task.run_location, ".parts", name), run_dir / ".parts" / name)


def _publish_partition(task: PartitionTask, run_dir: Path) -> None:
    """Publish the partition's parts and result, replacing an earlier attempt's."""
    name = f"part-{task.partition:05d}"
    with tempfile.TemporaryDirectory(prefix="offerflow-publish-") as staging:
        root = Path(staging)
        for table in TABLES:
            part = run_dir / table / f"{name}.parquet"
            if part.exists():
                (root / table).mkdir(parents=True, exist_ok=True)
                part.rename(root / table / part.name)
        result = run_dir / RESULTS / f"{name}.json"
        (root / RESULTS).mkdir()
        result.rename(root / RESULTS / result.name)
        publish_tree(root, task.run_location)
