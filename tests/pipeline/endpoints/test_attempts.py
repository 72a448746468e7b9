"""Every attempt named by X-Request-ID and recorded with it; failed attempts logged, once each.

Against a scripted server on 127.0.0.1: it answers from a script and keeps the headers it got.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import polars as pl
import pytest
from aiohttp import web

from offerflow.errors import CallInterrupted, CircuitOpenError, EndpointStatusError
from offerflow.pipeline.endpoints import Codec, Endpoint, ModelClient
from offerflow.pipeline.endpoints.attempts import RequestIds
from offerflow.pipeline.outputs import JsonLines, RequestLog
from tests.local_http import serve_route

pytestmark = pytest.mark.anyio

RUN = "20261203T0457Z-ab12cd"
LOGGER = "offerflow.pipeline"


@dataclass
class Script:
    """The statuses the server answers in turn (the last one repeats), and the ids it got."""

    statuses: list[int] = field(default_factory=lambda: [200])
    request_ids: list[str | None] = field(default_factory=list)
    batch: bool = False


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Script]]:
    script = Script()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        script.request_ids.append(request.headers.get("X-Request-ID"))
        status = script.statuses[min(len(script.request_ids), len(script.statuses)) - 1]
        if status != 200:
            return web.Response(status=status, text="busy")
        if script.batch:
            return web.json_response({"predictions": [1.0] * len(body["instances"])})
        return web.json_response({"prediction": 1.0})

    async with serve_route("/predict", handle) as url:
        yield url, script


async def _no_wait(delay: float) -> bool:
    return False


def _client(
    url: str,
    *,
    run_id: str | None = RUN,
    batch: bool = False,
    attempts: RequestLog | None = None,
    **options: Any,
) -> ModelClient:
    """A client of one endpoint, ``ats``, retried twice unless ``options`` say otherwise."""
    codec = Codec("json-batch", {"x": "x"}, "predictions", "number") if batch else None
    options = {"retries": 2, "backoff_initial_s": 0.001, **options}
    endpoint = Endpoint("ats", url, "prediction", codec=codec, **options)
    return ModelClient([endpoint], run_id=run_id, attempts=attempts, wait=_no_wait)


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """offerflow's records (the test server's access log may be captured too)."""
    return [r for r in caplog.records if r.name.startswith(f"{LOGGER}.")]


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in _ours(caplog) if r.levelno >= logging.INFO]


def _fields(caplog: pytest.LogCaptureFixture, *names: str) -> list[tuple[Any, ...]]:
    """Each record's level, then the fields it was logged with (``extra=``)."""
    return [(r.levelname, *(vars(r).get(n) for n in names)) for r in _ours(caplog)]


@pytest.mark.parametrize(
    ("run_id", "member", "endpoint", "attempt", "members", "expected"),
    [
        (RUN, "003D2324", "ats", 2, 1, f"{RUN}:003D2324:ats:2"),
        (RUN, "003D2324", "ats_recent", 1, 50, f"{RUN}:003D2324+49:ats_recent:1"),
        ("r", "a:b", "ats", 1, 1, "r:a:b:ats:1"),  # read from both ends: r | a:b | ats | 1
        ("r", "bad\r\nX-Evil: 1", "ats", 1, 1, "r:bad%0D%0AX-Evil%3A%201:ats:1"),
        ("100%", "m%d", "ats", 3, 1, "100%:m%d:ats:3"),  # a % is no format specifier
    ],
)
def test_a_request_id_names_the_run_member_endpoint_and_attempt(
    run_id: str, member: str, endpoint: str, attempt: int, members: int, expected: str
) -> None:
    headers, request_id = RequestIds(run_id, endpoint).headers(member, attempt, members)
    assert request_id == expected
    lines = headers.decode().split("\r\n")
    assert f"X-Request-ID: {expected}" in lines
    assert lines[-1] == ""  # every line ended, nothing after
    assert ("X-Offerflow-Members: 50" in lines) == (members == 50)


async def test_each_attempt_sends_its_own_id_and_the_requests_table_keeps_it(
    server: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = server
    script.statuses = [503, 503, 200]
    requests = RequestLog(tmp_path / ".parts")
    async with _client(url, attempts=requests) as client:
        result = await client.call("ats", "M-42", b"{}")
    requests.finish(tmp_path / "requests.parquet")
    table = pl.read_parquet(tmp_path / "requests.parquet")

    expected = [f"{RUN}:M-42:ats:{n}" for n in (1, 2, 3)]
    assert script.request_ids == expected
    assert table.select("attempt", "request_id", "status").rows() == [
        (1, expected[0], 503),
        (2, expected[1], 503),
        (3, expected[2], 200),
    ]
    assert result.request_id == expected[2]


async def test_a_client_outside_a_run_names_its_requests_by_one_random_id(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.statuses = [503, 200]
    async with _client(url, run_id=None) as client:
        await client.call("ats", "m1", b"{}")
        await client.call("ats", "m2", b"{}")
    runs = {rid.split(":")[0] for rid in script.request_ids if rid is not None}
    assert len(runs) == 1
    assert re.fullmatch(r"[0-9a-f]{12}", runs.pop())
    assert [rid.split(":", 1)[1] for rid in script.request_ids if rid] == [
        "m1:ats:1",
        "m1:ats:2",
        "m2:ats:1",
    ]


async def test_a_batched_call_names_its_first_member_and_the_others_count(
    server: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = server
    script.batch = True
    requests = RequestLog(tmp_path / ".parts")
    async with _client(url, batch=True, attempts=requests) as client:
        body = b'{"instances": [{"x": 1}, {"x": 2}, {"x": 3}]}'
        await client.call("ats", "m1", body, members=3, batch=["m1", "m2", "m3"])
    requests.finish(tmp_path / "requests.parquet")
    table = pl.read_parquet(tmp_path / "requests.parquet")
    assert script.request_ids == [f"{RUN}:m1+2:ats:1"]
    assert table.select("member_id", "members", "request_id").rows() == [
        ("m1", 3, f"{RUN}:m1+2:ats:1")
    ]


async def test_a_call_that_succeeds_at_once_logs_nothing(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = server
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with _client(url) as client:
            await client.call("ats", "m1", b"{}")
    assert _records(caplog) == []


@pytest.mark.parametrize(
    ("statuses", "outcomes", "read", "message"),
    [
        pytest.param(
            [503, 429, 200],
            [("WARNING", "HTTP 503"), ("WARNING", "HTTP 429")],
            0,
            "ats attempt 1 for member m1 failed (HTTP 503), retrying in ",
            id="retried-then-answered",
        ),
        pytest.param(
            [503],
            [("WARNING", "HTTP 503"), ("WARNING", "HTTP 503"), ("ERROR", "HTTP 503")],
            2,
            "ats attempt 3 for member m1 failed (HTTP 503) for good, retries exh",
            id="retries-exhausted",
        ),
        pytest.param(
            [404],
            [("ERROR", "HTTP 404")],
            0,
            "ats attempt 1 for member m1 failed (HTTP 404) for good, not a retry status",
            id="not-a-retry-status",
        ),
    ],
)
async def test_a_failed_attempt_is_a_warning_while_retried_and_an_error_when_final(
    server: tuple[str, Script],
    caplog: pytest.LogCaptureFixture,
    statuses: list[int],
    outcomes: list[tuple[str, str]],
    read: int,
    message: str,
) -> None:
    # an answered attempt is not logged; each failed one is, with its own request id
    url, script = server
    script.statuses = statuses
    answered = statuses[-1] == 200
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with _client(url) as client:
            with contextlib.nullcontext() if answered else pytest.raises(EndpointStatusError):
                await client.call("ats", "m1", b"{}")
    assert _fields(caplog, "attempt", "outcome", "request_id") == [
        (level, attempt, kind, f"{RUN}:m1:ats:{attempt}")
        for attempt, (level, kind) in enumerate(outcomes, 1)
    ]
    assert _ours(caplog)[read].getMessage().startswith(message)


async def test_a_call_the_open_breaker_refuses_is_an_error_without_a_request_id(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    script.statuses = [503]
    async with _client(url, retries=0, breaker_failures=1) as client:
        with pytest.raises(EndpointStatusError):
            await client.call("ats", "m1", b"{}")  # opens the breaker
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CircuitOpenError):
            await client.call("ats", "m2", b"{}")
    assert _fields(caplog, "member_id", "attempt", "outcome", "request_id") == [
        ("ERROR", "m2", 1, "CircuitOpenError", None)  # no request id: nothing was sent
    ]
    assert len(script.request_ids) == 1


async def test_a_call_abandoned_by_a_stopping_run_is_a_warning(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    script.statuses = [503]
    stopping = anyio.Event()
    stopping.set()
    endpoint = Endpoint("ats", url, "prediction", backoff_initial_s=0.001)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with ModelClient([endpoint], run_id=RUN, stopping=stopping) as client:
            with pytest.raises(CallInterrupted):
                await client.call("ats", "m1", b"{}")
    assert _fields(caplog, "attempt", "outcome") == [
        ("WARNING", 1, "HTTP 503"),
        ("WARNING", 1, "CallInterrupted"),
    ]
    assert _ours(caplog)[1].getMessage() == (
        "ats call for member m1 abandoned after attempt 1: run stopping: retry abandoned"
    )


async def test_a_failed_batch_names_every_member_it_carried(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    script.statuses = [500]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with _client(url, batch=True, retries=0) as client:
            with pytest.raises(EndpointStatusError):
                await client.call("ats", "m1", b"{}", members=3, batch=["m1", "m2", "m3"])
    assert _fields(caplog, "member_id", "member_ids") == [("ERROR", "m1", ["m1", "m2", "m3"])]
    assert "ats attempt 1 for 3 members from m1 failed (HTTP 500)" in _ours(caplog)[0].getMessage()


async def test_the_run_log_writes_a_failed_attempts_fields(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    script.statuses = [503, 200]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with _client(url) as client:
            await client.call("ats", "m1", b"{}")
    (record,) = _ours(caplog)
    line = json.loads(JsonLines("r").format(record))
    assert {k: v for k, v in line.items() if k not in ("ts", "message")} == {
        "level": "WARNING",
        "logger": "offerflow.pipeline.endpoints.attempts",
        "run_id": "r",
        "member_id": "m1",
        "endpoint": "ats",
        "attempt": 1,
        "outcome": "HTTP 503",
        "request_id": f"{RUN}:m1:ats:1",
    }
