"""The model client against real HTTP servers on 127.0.0.1: a scripted fake and the bundled app."""

from __future__ import annotations

import contextlib
import random
import socket
import time
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
    CallInterrupted,
    CircuitOpenError,
    EndpointConnectionError,
    EndpointStatusError,
    EndpointTimeout,
    InvalidResponseError,
)
from offerflow.pipeline.endpoints.client import MAX_BODY, Endpoint, ModelClient
from offerflow.pipeline.endpoints.retry import RetryBudget
from offerflow.pipeline.outputs.sinks import RequestLog
from offerflow.serving import BundledServer
from tests.local_http import serve_route

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
    headers: list[dict[str, str]] = field(default_factory=list)
    never: anyio.Event = field(default_factory=anyio.Event)
    received: anyio.Event = field(default_factory=anyio.Event)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, Script]]:
    script = Script()

    async def handle(request: web.Request) -> web.StreamResponse:
        script.seen.append(await request.read())
        script.headers.append(dict(request.headers))
        script.received.set()
        index = min(len(script.seen), len(script.answers)) - 1
        kind, value = script.answers[index]
        if kind == "hang":
            await script.never.wait()
        if kind == "reset":
            assert request.transport is not None
            request.transport.close()
        if kind == "status":
            code, retry_after = value if isinstance(value, tuple) else (value, None)
            headers = {} if retry_after is None else {"Retry-After": retry_after}
            return web.Response(status=code, text="busy", headers=headers)
        if kind == "raw":
            return web.Response(body=value, content_type="application/json")
        return web.json_response(value)

    async with serve_route("/predict", handle) as url:
        try:
            yield url, script
        finally:
            script.never.set()


@contextlib.contextmanager
def _unused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on once the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@dataclass
class Waits:
    """The wait seam: records every backoff the client asks for and answers at once."""

    delays: list[float] = field(default_factory=list)
    stopping: bool = False

    async def __call__(self, delay: float) -> bool:
        self.delays.append(delay)
        return self.stopping


def _client(
    url: str,
    *,
    waits: Waits | None = None,
    retries: int = 2,
    timeout_s: float = 5.0,
    seed: int = 0,
    **kw: Any,
) -> ModelClient:
    endpoint_options = {k: kw.pop(k) for k in list(kw) if k in Endpoint.__dataclass_fields__}
    endpoint = Endpoint(
        "ats", url, "prediction", timeout_s=timeout_s, retries=retries, **endpoint_options
    )
    return ModelClient([endpoint], wait=waits or Waits(), rng=random.Random(seed), **kw)


async def test_a_valid_answer_is_returned_with_one_attempt(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("json", {"prediction": 12.5})]
    async with _client(url) as client:
        result = await client.call("ats", "m1", orjson.dumps(FEATURES))
    assert (result.value, result.attempts) == (12.5, 1)
    assert orjson.loads(script.seen[0]) == FEATURES


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(fake: tuple[str, Script], status: int) -> None:
    url, script = fake
    script.answers = [("status", status), ("json", {"prediction": 1.0})]
    async with _client(url) as client:
        result = await client.call("ats", "m1", b"{}")
    assert result.attempts == 2
    assert len(script.seen) == 2


@pytest.mark.parametrize("status", [400, 404, 409, 422])
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
    log = RequestLog(tmp_path / ".parts")
    async with _client(url, attempts=log) as client:
        await client.call("ats", "m1", b"{}")
    log.finish(tmp_path / "requests.parquet")
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


async def test_requests_name_the_member_and_the_attempt(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 503), ("json", {"prediction": 1.0})]
    async with _client(url) as client:
        await client.call("ats", "M-42", b"{}")
    assert [(h["X-Offerflow-Member"], h["X-Offerflow-Attempt"]) for h in script.headers] == [
        ("M-42", "1"),
        ("M-42", "2"),
    ]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("1", 1.0), ("7", 7.0), ("3600", 30.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
async def test_retry_after_is_honoured_and_clamped(
    fake: tuple[str, Script], retry_after: str, expected: float
) -> None:
    url, script = fake
    script.answers = [("status", (503, retry_after)), ("json", {"prediction": 1.0})]
    waits = Waits()
    async with _client(url, waits=waits, retry_after_max_s=30.0) as client:
        await client.call("ats", "m1", b"{}")
    assert waits.delays == [expected]


@pytest.mark.parametrize("seed", [0, 7])
async def test_backoff_draws_uniformly_from_zero_to_the_capped_doubling(
    fake: tuple[str, Script], seed: int
) -> None:
    url, script = fake
    script.answers = [("status", 503)]
    waits = Waits()
    options = {"backoff_initial_s": 0.1, "backoff_max_s": 0.3}
    async with _client(url, waits=waits, retries=4, seed=seed, **options) as client:
        with pytest.raises(EndpointStatusError):
            await client.call("ats", "m1", b"{}")
    expected = random.Random(seed)
    assert waits.delays == [expected.uniform(0.0, cap) for cap in (0.1, 0.2, 0.3, 0.3)]


async def test_a_spent_retry_budget_stops_retries(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 503)]
    budget = RetryBudget(ratio=0.0, floor=1)
    async with _client(url, retries=5, budget=budget) as client:
        for member in ("m1", "m2"):
            with pytest.raises(EndpointStatusError):
                await client.call("ats", member, b"{}")
    # the floor of one retry went to the first member; the second got none
    assert len(script.seen) == 3
    assert (budget.calls, budget.retries) == (2, 1)


async def test_the_breaker_opens_after_consecutive_failures_and_fails_fast(
    fake: tuple[str, Script],
) -> None:
    url, script = fake
    script.answers = [("status", 503)]
    async with _client(url, retries=0, breaker_failures=3, breaker_cooldown_s=60) as client:
        for member in ("m1", "m2", "m3"):
            with pytest.raises(EndpointStatusError):
                await client.call("ats", member, b"{}")
        with pytest.raises(CircuitOpenError) as caught:
            await client.call("ats", "m4", b"{}")
    assert caught.value.status == "endpoint_unavailable"
    assert len(script.seen) == 3  # m4 was never sent


async def test_a_half_open_breaker_probes_and_closes_on_success(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 503), ("json", {"prediction": 1.0})]
    async with _client(url, retries=0, breaker_failures=1, breaker_cooldown_s=0.0) as client:
        with pytest.raises(EndpointStatusError):
            await client.call("ats", "m1", b"{}")
        assert client.breakers["ats"].state == "open"
        result = await client.call("ats", "m2", b"{}")  # the cooldown is over: m2 is the probe
        assert client.breakers["ats"].state == "closed"
    assert result.value == 1.0


async def test_a_passed_deadline_starts_no_attempt(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("json", {"prediction": 1.0})]
    async with _client(url) as client:
        with pytest.raises(EndpointTimeout, match="deadline"):
            await client.call("ats", "m1", b"{}", deadline=time.monotonic() - 1)
    assert script.seen == []


async def test_no_retry_waits_past_the_deadline(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", (503, "60"))]
    waits = Waits()
    async with _client(url, waits=waits, retry_after_max_s=60) as client:
        with pytest.raises(EndpointStatusError):
            await client.call("ats", "m1", b"{}", deadline=time.monotonic() + 5)
    assert waits.delays == []
    assert len(script.seen) == 1


async def test_an_attempt_is_cut_at_the_members_deadline(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("hang", None)]
    async with _client(url, retries=0, timeout_s=30) as client:
        with pytest.raises(EndpointTimeout):
            await client.call("ats", "m1", b"{}", deadline=time.monotonic() + 0.2)
    assert len(script.seen) == 1


async def test_a_stopping_run_abandons_the_backoff_wait(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 503)]
    waits = Waits(stopping=True)
    async with _client(url, waits=waits) as client:
        with pytest.raises(CallInterrupted) as caught:
            await client.call("ats", "m1", b"{}")
    assert caught.value.status == "interrupted"
    assert len(script.seen) == 1


async def test_a_stop_event_wakes_a_long_backoff(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", (503, "3600"))]
    stopping = anyio.Event()
    endpoint = Endpoint("ats", url, "prediction", retry_after_max_s=3600)
    async with ModelClient([endpoint], stopping=stopping) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:

                async def call() -> None:
                    with pytest.raises(CallInterrupted):
                        await client.call("ats", "m1", b"{}")

                group.start_soon(call)
                await script.received.wait()
                await anyio.wait_all_tasks_blocked()  # the client sits in its backoff wait
                stopping.set()


async def test_a_body_over_the_cap_is_an_invalid_response(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("raw", b'{"prediction": 1, "pad": "' + b"x" * MAX_BODY + b'"}')]
    async with _client(url) as client:
        with pytest.raises(InvalidResponseError, match="larger than"):
            await client.call("ats", "m1", b"{}")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_final_model_error_naming_its_status_and_location(
    status: int,
) -> None:
    calls: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        calls.append(request.path)
        location = "https://user:pw@models.example/v2/ats?api_key=s3cr3t"
        return web.Response(status=status, headers={"Location": location})

    async with serve_route("/predict", redirect) as url, _client(url, retries=2) as client:
        with pytest.raises(EndpointStatusError) as caught:
            await client.call("ats", "m1", b"{}")
    assert caught.value.status == "model_error"
    assert caught.value.reason == (
        f"HTTP {status} redirect to https://models.example/v2/ats: redirects are not followed"
    )
    assert calls == ["/predict"]  # neither retried nor followed
    assert client.breakers["ats"].state == "closed"


async def test_a_redirect_without_location_says_so(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answers = [("status", 302)]
    async with _client(url) as client:
        with pytest.raises(EndpointStatusError, match="HTTP 302 redirect no Location"):
            await client.call("ats", "m1", b"{}")


async def test_an_open_breaker_says_how_many_failures_opened_it_and_the_last() -> None:
    with _unused_port() as port:
        url = f"http://127.0.0.1:{port}/predict"
    async with _client(url, retries=0, breaker_failures=3, breaker_cooldown_s=60) as client:
        for member in ("m1", "m2", "m3"):
            with pytest.raises(EndpointConnectionError):
                await client.call("ats", member, b"{}")
        with pytest.raises(CircuitOpenError) as caught:
            await client.call("ats", "m4", b"{}")
    assert caught.value.reason.startswith(
        "circuit open after 3 consecutive failures (last: ConnectionRefusedError: "
    )
    assert caught.value.reason.endswith("): not called")


async def test_a_breaker_opened_by_statuses_names_the_last_status(
    fake: tuple[str, Script],
) -> None:
    url, script = fake
    script.answers = [("status", 502)]
    async with _client(url, retries=0, breaker_failures=2, breaker_cooldown_s=60) as client:
        for member in ("m1", "m2"):
            with pytest.raises(EndpointStatusError):
                await client.call("ats", member, b"{}")
        with pytest.raises(
            CircuitOpenError, match=r"after 2 consecutive failures \(last: HTTP 502"
        ):
            await client.call("ats", "m3", b"{}")
