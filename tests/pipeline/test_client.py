"""The model client against real HTTP servers on 127.0.0.1: a scripted fake and the bundled app."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import polars as pl
import pytest
from aiohttp import web

from offerflow.errors import (
    EndpointConnectionError,
    EndpointStatusError,
    EndpointTimeout,
    InvalidResponseError,
)
from offerflow.pipeline.client import Endpoint, ModelClient
from offerflow.pipeline.sinks import RequestLog
from offerflow.serving import BundledServer

pytestmark = pytest.mark.anyio

FEATURES = {
    "AVG_POINTS_BOUGHT": 1000.0,
    "AVG_REVENUE_USD": 10.0,
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 2000.0,
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 20.0,
    "PCT_BUY_TRANSACTIONS": 0.5,
    "PCT_GIFT_TRANSACTIONS": 0.25,
    "PCT_REDEEM_TRANSACTIONS": 0.25,
    "DAYS_SINCE_LAST_TRANSACTION": 3,
}


@dataclass
class Script:
    """What the fake answers, one entry per request (the last one repeats), and what it saw."""

    answers: list[tuple[str, Any]] = field(default_factory=list)
    seen: list[bytes] = field(default_factory=list)
    never: anyio.Event = field(default_factory=anyio.Event)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, Script]]:
    script = Script()

    async def handle(request: web.Request) -> web.StreamResponse:
        script.seen.append(await request.read())
        index = min(len(script.seen), len(script.answers)) - 1
        kind, value = script.answers[index]
        if kind == "hang":
            await script.never.wait()
        if kind == "reset":
            assert request.transport is not None
            request.transport.close()
        if kind == "status":
            return web.Response(status=value, text="busy")
        if kind == "raw":
            return web.Response(body=value, content_type="application/json")
        return web.json_response(value)

    app = web.Application()
    app.router.add_post("/predict", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/predict", script
    finally:
        script.never.set()
        await runner.cleanup()


@contextlib.contextmanager
def _unused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on once the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def _no_sleep(_: float) -> None:
    return None


def _client(url: str, *, retries: int = 2, timeout_s: float = 5.0, **kw: Any) -> ModelClient:
    endpoint = Endpoint("ats", url, "prediction", timeout_s=timeout_s, retries=retries)
    return ModelClient([endpoint], sleep=_no_sleep, rng=random.Random(0), **kw)


async def test_a_valid_answer_is_returned_with_one_attempt(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("json", {"prediction": 12.5})]
    async with _client(url) as client:
        result = await client.call("ats", "m1", orjson.dumps(FEATURES))
    assert (result.value, result.attempts) == (12.5, 1)
    assert orjson.loads(script.seen[0]) == FEATURES


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_statuses_are_retried(fake: tuple[str, Script], status: int) -> None:
    url, script = fake
    script.answers = [("status", status), ("json", {"prediction": 1.0})]
    async with _client(url) as client:
        result = await client.call("ats", "m1", b"{}")
    assert result.attempts == 2
    assert len(script.seen) == 2


@pytest.mark.parametrize("status", [400, 404, 422, 500])
async def test_other_statuses_fail_at_once(fake: tuple[str, Script], status: int) -> None:
    url, script = fake
    script.answers = [("status", status)]
    async with _client(url) as client:
        with pytest.raises(EndpointStatusError) as caught:
            await client.call("ats", "m1", b"{}")
    assert caught.value.status_code == status
    assert len(script.seen) == 1


async def test_retries_stop_after_the_configured_count(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 503)]
    async with _client(url, retries=3) as client:
        with pytest.raises(EndpointStatusError) as caught:
            await client.call("ats", "m1", b"{}")
    assert len(script.seen) == 4
    assert caught.value.attempt == 4


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b'{"other": 1}', "expected field 'prediction' missing"),
        (b'{"prediction": "high"}', "not a finite number"),
        (b'{"prediction": NaN}', "not JSON"),
        (b'{"prediction": 1e999}', "not JSON"),
        (b'{"prediction": true}', "not a finite number"),
        (b"[1, 2]", "expected field 'prediction' missing"),
    ],
)
async def test_invalid_answers_fail_without_a_default(
    fake: tuple[str, Script], body: bytes, problem: str
) -> None:
    url, script = fake
    script.answers = [("raw", body)]
    async with _client(url) as client:
        with pytest.raises(InvalidResponseError, match=problem) as caught:
            await client.call("ats", "m7", b"{}")
    assert (caught.value.endpoint, caught.value.member_id) == ("ats", "m7")
    assert len(script.seen) == 1


async def test_a_hanging_endpoint_is_cut_at_the_timeout(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("hang", None)]
    async with _client(url, retries=1, timeout_s=0.2) as client:
        with pytest.raises(EndpointTimeout):
            await client.call("ats", "m1", b"{}")
    assert len(script.seen) == 2


async def test_a_dropped_connection_is_a_connection_error(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("reset", None)]
    async with _client(url, retries=0) as client:
        with pytest.raises(EndpointConnectionError):
            await client.call("ats", "m1", b"{}")


async def test_a_refused_connection_is_a_connection_error() -> None:
    with _unused_port() as port:
        url = f"http://127.0.0.1:{port}/predict"
    async with _client(url, retries=1) as client:
        with pytest.raises(EndpointConnectionError) as caught:
            await client.call("ats", "m1", b"{}")
    assert caught.value.attempt == 2


async def test_every_attempt_is_recorded(fake: tuple[str, Script], tmp_path: Path) -> None:
    url, script = fake
    script.answers = [("status", 503), ("json", {"prediction": 2.0})]
    log = RequestLog(tmp_path)
    async with _client(url, attempts=log) as client:
        await client.call("ats", "m1", b"{}")
    log.finish()
    table = pl.read_parquet(tmp_path / "requests.parquet")
    assert table.select("attempt", "status").rows() == [(1, 503), (2, 200)]
    assert table.get_column("error").to_list()[1] is None
    assert "503" in table.get_column("error").to_list()[0]


async def test_the_bundled_app_answers_through_the_client() -> None:
    with BundledServer(workers=1) as server:
        endpoints = [
            Endpoint("ats", f"{server.base_url}/ml/ats/predict", "prediction"),
            Endpoint("offer", f"{server.base_url}/offer/assign", "offer", answer="label"),
        ]
        async with ModelClient(endpoints) as client:
            ats = await client.call("ats", "m1", orjson.dumps(FEATURES))
            body = orjson.dumps({"ats_prediction": ats.value, "resp_prediction": 0.5})
            offer = await client.call("offer", "m1", body)
    volume = 0.7 * 2000.0 + 0.3 * 1000.0
    assert ats.value == abs(volume * max(0.0, 0.5 + 0.25 - 0.25))
    assert offer.value == "OFFER_2"
