"""The cluster a run uses: a scheduler's, or a local one started for the run.

Each endpoint's ``concurrency`` holds for the whole cluster: a partition runs with its share,
the endpoint's concurrency divided by the cluster's worker threads (the partitions that run at
once), and at least 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from offerflow.config import PartnerConfig
from offerflow.errors import UsageError, WorldError

__all__ = ["ALLOWED_FAILURES", "Cluster", "open_cluster", "shared_concurrency"]

log = logging.getLogger(__name__)

#: how many times a partition may be tried on workers that died on it, on a local cluster (a
#: remote scheduler's own ``distributed.scheduler.allowed-failures`` decides there)
ALLOWED_FAILURES = 3
#: workers of a local cluster unless the run says how many
_LOCAL_WORKERS = 2
#: how long to wait for a scheduler or the first worker
_CONNECT_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Cluster:
    """A connected cluster: its client, its worker threads, and whether it is a remote one."""

    client: Any
    threads: int
    remote: bool
    address: str

    def describe(self) -> dict[str, Any]:
        """How the run used the cluster, for its summary."""
        workers = self.client.scheduler_info()["workers"]
        return {
            "scheduler": self.address if self.remote else "local",
            "workers": len(workers),
            "threads": self.threads,
        }


@contextmanager
def open_cluster(scheduler: str | None, workers: int | None) -> Iterator[Cluster]:
    """Connect to the scheduler at ``scheduler``, or start a local cluster of ``workers``
    processes (one thread each) for the block; a WorldError when it cannot be reached."""
    import dask

    from distributed import Client, LocalCluster

    if scheduler is not None:
        if workers is not None:
            raise UsageError("--workers starts a local cluster: it cannot go with --scheduler")
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise WorldError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            client.wait_for_workers(1, timeout=_CONNECT_TIMEOUT_S)
            threads = sum(client.nthreads().values())
            log.info("Dask scheduler at %s: %d worker threads", scheduler, threads)
            yield Cluster(client, threads, remote=True, address=scheduler)
        return
    count = _LOCAL_WORKERS if workers is None else workers
    if count < 1:
        raise UsageError(f"--workers must be at least 1, got {count}")
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        local = LocalCluster(
            n_workers=count,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
    with local, Client(local) as client:
        log.info("local Dask cluster: %d workers at %s", count, local.scheduler_address)
        yield Cluster(client, count, remote=False, address=local.scheduler_address)


def shared_concurrency(config: PartnerConfig, threads: int) -> PartnerConfig:
    """``config`` with every endpoint's concurrency its share of one partition of ``threads``
    running at once (at least 1), so that the cluster as a whole keeps the endpoint's limit."""
    models = tuple(
        m.model_copy(update={"concurrency": max(1, m.concurrency // threads)})
        for m in config.models
    )
    offer = config.offer.model_copy(
        update={"concurrency": max(1, config.offer.concurrency // threads)}
    )
    return config.model_copy(update={"models": models, "offer": offer})
