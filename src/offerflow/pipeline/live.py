"""Live metrics: a run's counts served to Prometheus while it runs (``run --metrics-port``).

A run given a metrics port counts as it goes, in plain tallies: the members recorded by status,
every HTTP attempt by endpoint and outcome with its latency, the calls in flight per endpoint,
the rows read and rejected. A scrape reads the tallies through :class:`LiveMetrics` (a
collector on a registry of its own, not prometheus-client's global one), served by
prometheus-client's HTTP server on 127.0.0.1, in a thread, for as long as the run lasts
(:func:`serve_metrics`).

The tallies are fed from three places, each there only when a port is given, so that a run
without one pays nothing per member or request: the offers table counts the rows it records
(:meth:`LiveMetrics.offers_table`), a tee beside the request log counts the attempts
(:meth:`LiveMetrics.attempts`), and the engine's item events of the endpoints' tasks count the
calls in flight (:class:`LiveMetrics` is a hook). On a Dask cluster the driver adds up each
partition's result as it arrives (:meth:`LiveMetrics.partition_done`): the totals move a
partition at a time.

Counting is a few dict updates on the event loop: about 1.4 µs for an attempt and its call in
flight, where prometheus-client's own counter, histogram and gauge, which take a lock per
update, cost about 4.5 µs (``docs/architecture.md``, "Live metrics"). A scrape, in the server's
thread, copies each dict whole (one step under the GIL) before reading it. prometheus-client
itself is imported when a server starts, not with the pipeline: its import takes about 80 ms,
more than a small run's members.
"""

from __future__ import annotations

import contextlib
import logging
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Hook
from offerflow.errors import UsageError
from offerflow.pipeline.endpoints import AttemptSink
from offerflow.pipeline.inputs import ReadResult
from offerflow.pipeline.outputs import ChunkedTable, PartitionResult

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["BUCKETS", "HOST", "LiveMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

#: the only address the metrics are served on: a run's figures are for this machine
HOST = "127.0.0.1"
#: the upper bounds (seconds) of the latency histogram's buckets, +Inf after them:
#: prometheus-client's defaults, from 5 ms to 10 s (an endpoint's default timeout)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# the buckets' bounds as the text format writes them
_LE = (*(repr(bound) for bound in BUCKETS), "+Inf")
#: the outcome of the attempts a Dask run's partitions counted as errors (a partition's result
#: does not tell their kinds; its other attempts are ``200``)
_ERROR = "error"


class LiveMetrics(Hook):
    """A run's live counts: fed by the run while it goes, read by a scrape.

    ``endpoints`` names the run's endpoints: their tasks' items in flight are its calls in
    flight (a batched endpoint's are the members in its calls). It is a hook of the workflow
    (the item events of those tasks), and a collector of prometheus-client (:meth:`collect`).
    """

    def __init__(self, endpoints: Iterable[str]) -> None:
        #: members recorded, by status
        self.members: dict[str, int] = {}
        #: HTTP attempts, by (endpoint, HTTP status or error kind)
        self.requests: dict[tuple[str, str], int] = {}
        #: per endpoint, its tasks' items in flight
        self.inflight: dict[str, int] = dict.fromkeys(endpoints, 0)
        #: per endpoint, attempts per latency bucket (the last one +Inf), and their sum (s)
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.rows_read = 0
        self.rows_rejected = 0
        #: where the metrics are served (set by :func:`serve_metrics`)
        self.url: str | None = None

    # The engine's item events: only the endpoints' tasks count, every other task passes.

    def on_item_start(self, *, task: str, key: Hashable) -> None:
        inflight = self.inflight
        if task in inflight:
            inflight[task] += 1

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        inflight = self.inflight
        if task in inflight:
            inflight[task] -= 1

    def on_item_failed(
        self, *, task: str, key: Hashable, error: BaseException, latency: float
    ) -> None:
        inflight = self.inflight
        if task in inflight:
            inflight[task] -= 1

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        # a task cancelled by another's failure ends no item: nothing is in flight any more
        self.inflight = dict.fromkeys(self.inflight, 0)

    # What the run feeds in.

    def attempts(self, sink: AttemptSink) -> AttemptSink:
        """``sink`` (the request log), with every attempt counted after it is recorded there."""
        return _Tee(sink, self)

    def offers_table(self, *args: Any, **kwargs: Any) -> ChunkedTable:
        """A :class:`ChunkedTable` (same arguments) that counts the members recorded in it by
        status: an offers table."""
        return _CountingTable(self, *args, **kwargs)

    def attempt(
        self, endpoint: str, status: int | None, error: str | None, latency_ms: float
    ) -> None:
        """Count one HTTP attempt: its outcome is its HTTP status when an answer came, else its
        error's kind (its class, as the request log's ``error`` begins with it)."""
        key = (endpoint, _outcome(status, error))
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        seconds = latency_ms / 1000
        counts = self.latency.get(endpoint)
        if counts is None:
            counts = self.latency[endpoint] = [0] * (len(BUCKETS) + 1)
            self.latency_sum[endpoint] = 0.0
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[endpoint] += seconds

    def recorded(self, status: str, members: int = 1) -> None:
        """Count ``members`` members recorded with ``status``."""
        self.members[status] = self.members.get(status, 0) + members

    def input_read(self, read: ReadResult) -> None:
        """Count the rows of an input that was read."""
        self.rows_read += read.rows_in
        self.rows_rejected += read.rows_rejected

    def partition_done(self, result: PartitionResult) -> None:
        """Add up a partition's result, as a Dask run's driver receives it: its members by
        status, its endpoints' attempts (``200``, or ``error`` for those that failed) and its
        rows. Latencies and calls in flight are only counted in the process that calls."""
        for status, members in result.members_by_status.items():
            self.recorded(status, members)
        requests = self.requests
        for endpoint, figures in result.endpoints.items():
            errors = figures["errors"]
            for outcome, count in (("200", figures["requests"] - errors), (_ERROR, errors)):
                if count:
                    requests[endpoint, outcome] = requests.get((endpoint, outcome), 0) + count
        self.rows_read += result.rows_in
        self.rows_rejected += result.rows_rejected

    # What a scrape reads.

    def collect(self) -> Iterator[Metric]:
        """The metric families of the counts so far (prometheus-client's collector protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        members = CounterMetricFamily(
            "offerflow_members", "Members that got their final status.", labels=["status"]
        )
        for status, count in sorted(_copy(self.members).items()):
            members.add_metric([str(status)], count)
        yield members
        requests = CounterMetricFamily(
            "offerflow_requests",
            "HTTP attempts by endpoint and outcome: the HTTP status, or the error's kind.",
            labels=["endpoint", "status"],
        )
        for (endpoint, outcome), count in sorted(_copy(self.requests).items()):
            requests.add_metric([endpoint, outcome], count)
        yield requests
        latency = HistogramMetricFamily(
            "offerflow_request_latency_seconds",
            "HTTP attempts' latency by endpoint.",
            labels=["endpoint"],
        )
        sums = _copy(self.latency_sum)
        for endpoint, counts in sorted(_copy(self.latency).items()):
            cumulative, total = [], 0
            for bound, count in zip(_LE, list(counts), strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric([endpoint], cumulative, sums.get(endpoint, 0.0))
        yield latency
        inflight = GaugeMetricFamily(
            "offerflow_inflight_calls", "Calls in flight by endpoint.", labels=["endpoint"]
        )
        for endpoint, count in sorted(_copy(self.inflight).items()):
            inflight.add_metric([endpoint], count)
        yield inflight
        yield CounterMetricFamily(
            "offerflow_rows_read", "Rows of input read.", value=self.rows_read
        )
        yield CounterMetricFamily(
            "offerflow_rows_rejected", "Rows of input rejected.", value=self.rows_rejected
        )


@contextlib.contextmanager
def serve_metrics(port: int | None, config: PartnerConfig) -> Iterator[LiveMetrics | None]:
    """Serve the live metrics of a run of ``config`` on 127.0.0.1:``port`` (0: a free port)
    until the block ends; the block gets the :class:`LiveMetrics` to feed.

    Without a port nothing is made or served, and the block gets None. A port that cannot be
    listened on is a UsageError (exit 2).
    """
    if port is None:
        yield None
        return
    from prometheus_client import CollectorRegistry, start_http_server

    live = LiveMetrics(endpoint.name for endpoint in config.endpoints)
    registry = CollectorRegistry()
    registry.register(live)
    try:
        server, thread = start_http_server(port, addr=HOST, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {HOST}:{port}: {exc.strerror or exc}") from None
    live.url = f"http://{HOST}:{server.server_port}/metrics"
    log.info("metrics at %s", live.url)
    try:
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Tee:
    """An attempt sink that records every attempt in another, then counts it."""

    __slots__ = ("_live", "_sink")

    def __init__(self, sink: AttemptSink, live: LiveMetrics) -> None:
        self._sink = sink
        self._live = live

    def add(self, **attempt: Any) -> None:
        """Record the attempt (the fields of :meth:`AttemptSink.add`), then count it."""
        self._sink.add(**attempt)
        self._live.attempt(
            attempt["endpoint"], attempt["status"], attempt["error"], attempt["latency_ms"]
        )


class _CountingTable(ChunkedTable):
    """A table of members (the offers) that counts the rows it records by their status."""

    def __init__(self, live: LiveMetrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._live = live

    def append(self, row: Mapping[str, Any]) -> None:
        super().append(row)
        self._live.recorded(row["status"])

    def append_frame(self, frame: pl.DataFrame) -> None:
        super().append_frame(frame)
        for status, count in frame.get_column("status").value_counts().iter_rows():
            self._live.recorded(status, count)


def _outcome(status: int | None, error: str | None) -> str:
    """An attempt's outcome: the HTTP status when an answer came, else the error's class."""
    if status is not None:
        return str(status)
    return _ERROR if error is None else error.partition(":")[0]


def _copy(counts: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of a dict another thread updates: made in one step, so it never sees a change."""
    return dict(counts)
