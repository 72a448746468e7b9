"""Live metrics: what each feed counts, how a scrape reads it, and the server's lifetime."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from offerflow.config import DEFAULT_CONFIG, load_config
from offerflow.engine import Workflow
from offerflow.errors import UsageError
from offerflow.pipeline import LiveMetrics, PartitionResult, serve_metrics
from tests.processes import busy_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return _parse(answer.read().decode())


def _exposed(live: LiveMetrics) -> Samples:
    """What a scrape of ``live`` shows, through the text format, without a server."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(live)
    return _parse(generate_latest(registry).decode())


class _Requests:
    """An attempt sink that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self.rows.append(row)


def _attempt(status: int | None, error: str | None, latency_ms: float = 1.0) -> dict[str, Any]:
    return {
        "member_id": "m1",
        "members": 1,
        "endpoint": "ats",
        "attempt": 1,
        "request_id": "r:m1:ats:1",
        "status": status,
        "started_at": 0.0,
        "latency_ms": latency_ms,
        "error": error,
    }


def test_without_a_port_nothing_is_made_or_served() -> None:
    with serve_metrics(None, load_config(DEFAULT_CONFIG)) as live:
        assert live is None


def test_the_metrics_are_served_on_loopback_while_the_block_lasts_and_never_after() -> None:
    with serve_metrics(0, load_config(DEFAULT_CONFIG)) as live:
        assert live is not None
        served = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/metrics", live.url or "")
        assert served is not None
        live.recorded("ok", 3)
        samples = _scrape(served[0])
        port = int(served[1])
    assert samples[("offerflow_members_total", (("status", "ok"),))] == 3
    assert samples[("offerflow_inflight_calls", (("endpoint", "offer"),))] == 0
    assert samples[("offerflow_rows_read_total", ())] == 0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_a_port_in_use_is_a_usage_error_naming_it() -> None:
    config = load_config(DEFAULT_CONFIG)
    with (
        busy_port() as port,
        pytest.raises(UsageError, match=f"cannot serve metrics on 127.0.0.1:{port}"),
        serve_metrics(port, config),
    ):
        pass


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (200, None, "200"),
        (503, "EndpointStatusError: HTTP 503: b''", "503"),
        (200, "InvalidResponseError: body is not JSON", "200"),  # an answer came: its status
        (None, "EndpointTimeout: attempt timed out", "EndpointTimeout"),
        (None, "EndpointConnectionError: ConnectionResetError: reset", "EndpointConnectionError"),
    ],
)
def test_an_attempt_counts_under_its_http_status_else_its_errors_kind(
    status: int | None, error: str | None, outcome: str
) -> None:
    live = LiveMetrics(["ats"])
    live.attempts(_Requests()).add(**_attempt(status, error))
    samples = _exposed(live)
    requests = {k: v for k, v in samples.items() if k[0] == "offerflow_requests_total"}
    assert requests == {("offerflow_requests_total", (("endpoint", "ats"), ("status", outcome))): 1}


def test_the_tee_records_every_attempt_in_the_request_log_as_it_was_given() -> None:
    log = _Requests()
    sink = LiveMetrics(["ats"]).attempts(log)
    attempts = [_attempt(200, None), _attempt(None, "EndpointTimeout: late")]
    for attempt in attempts:
        sink.add(**attempt)
    assert log.rows == attempts


def test_attempt_latencies_fill_the_histogram_of_their_endpoint() -> None:
    live = LiveMetrics(["ats"])
    sink = live.attempts(_Requests())
    for latency_ms in (3.0, 30.0, 20_000.0):
        sink.add(**_attempt(200, None, latency_ms))
    samples = _exposed(live)

    def bucket(le: str) -> float:
        return samples[
            ("offerflow_request_latency_seconds_bucket", (("endpoint", "ats"), ("le", le)))
        ]

    buckets = {le: bucket(le) for le in ("0.005", "0.025", "0.05", "10.0", "+Inf")}
    assert buckets == {"0.005": 1, "0.025": 1, "0.05": 2, "10.0": 2, "+Inf": 3}
    assert samples[("offerflow_request_latency_seconds_count", (("endpoint", "ats"),))] == 3
    total = samples[("offerflow_request_latency_seconds_sum", (("endpoint", "ats"),))]
    assert total == pytest.approx(20.033)


def test_the_offers_table_counts_its_members_by_status_and_writes_them_unchanged(
    tmp_path: Path,
) -> None:
    live = LiveMetrics(["ats"])
    schema = {"member_id": pl.String(), "status": pl.String()}
    table = live.offers_table(tmp_path / "parts", "offers", schema, chunk_rows=2)
    table.append({"member_id": "a", "status": "ok"})
    table.append({"member_id": "b", "status": "model_error"})
    table.append_frame(pl.DataFrame({"member_id": ["c", "d"], "status": ["no_transactions"] * 2}))
    assert live.members == {"ok": 1, "model_error": 1, "no_transactions": 2}
    table.finish(tmp_path / "offers.parquet")
    written = pl.read_parquet(tmp_path / "offers.parquet")
    assert written.get_column("member_id").to_list() == ["a", "b", "c", "d"]


def test_an_endpoints_calls_in_flight_count_while_it_calls_and_other_tasks_not() -> None:
    live = LiveMetrics(["ats"])
    seen: list[tuple[str, int]] = []  # (task, ats calls in flight while it ran)

    async def ats(n: int) -> int:
        seen.append(("ats", live.inflight["ats"]))
        return n

    def record(n: int) -> int:
        seen.append(("record", live.inflight["ats"]))
        return n

    workflow = (
        Workflow("calls")
        .step("numbers", lambda: range(5))
        .stream("ats", ats, after="numbers", concurrency=1)
        .stream("record", record, after="ats")
    )
    workflow.run_sync(hooks=[live])
    assert sorted(seen) == [("ats", 1)] * 5 + [("record", 0)] * 5  # an ats call counts itself
    assert live.inflight == {"ats": 0}


def test_a_partitions_result_adds_to_the_totals_in_one_step() -> None:
    live = LiveMetrics(["ats"])
    result = PartitionResult(
        partition=3,
        rows_in=100,
        rows_used=90,
        rejects_by_reason={"bad_timestamp": 7, "duplicate_row": 3},
        members_in=20,
        members_by_status={"ok": 15, "no_transactions": 5},
        offers_by_type={"OFFER_1": 15},
        tasks={},
        endpoints={
            "ats": {"requests": 17, "errors": 2, "retries": 2},
            "offer": {"requests": 15, "errors": 0, "retries": 0},
        },
        started_at=0.0,
        finished_at=1.0,
        peak_rss_mb=1.0,
    )
    live.partition_done(result)
    live.partition_done(result)
    samples = _exposed(live)
    assert samples[("offerflow_members_total", (("status", "ok"),))] == 30
    assert samples[("offerflow_members_total", (("status", "no_transactions"),))] == 10
    requests = {k[1]: v for k, v in samples.items() if k[0] == "offerflow_requests_total"}
    assert requests == {
        (("endpoint", "ats"), ("status", "200")): 30,
        (("endpoint", "ats"), ("status", "error")): 4,
        (("endpoint", "offer"), ("status", "200")): 30,
    }
    assert samples[("offerflow_rows_read_total", ())] == 200
    assert samples[("offerflow_rows_rejected_total", ())] == 20
