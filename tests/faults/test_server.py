"""The fault server over HTTP: normal answers like the bundled app, each fault as planned."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from offerflow.serving.prediction import (
    Features,
    Prediction,
    assign_offer,
    predict_ats,
    predict_resp,
)
from tests.faults import DEFAULT_HUGE_BYTES, POST_ROUTES, FaultServer, Plan
from tests.faults.calls import (
    ATS,
    FEATURES,
    OFFER,
    PREDICTION,
    RESP,
    always,
    call,
    client,
    faulted,
    raw_exchange,
)

# A server starts in about half a second; pytest-timeout ends a hung start, stop or call.
pytestmark = pytest.mark.timeout(30)

SLOW_S = 0.3
FIELDS = [(ATS, "prediction"), (RESP, "prediction"), (OFFER, "offer")]
# Attempts of the menu server from here on take its faults; a call's default attempt 1 does not.
FIRST_MENU_ATTEMPT = 101

# The menu server's faults: attempt FIRST_MENU_ATTEMPT + i of any POST route gets MENU[i].
MENU: list[dict[str, Any]] = [
    {"fault": "status", "code": 429, "retry_after": "1"},
    {"fault": "status", "code": 503, "retry_after": "3600"},
    {"fault": "status", "code": 503, "retry_after": "Wed, 21 Oct 2026 07:28:00 GMT"},
    {"fault": "status", "code": 500},
    {"fault": "slow", "delay_s": SLOW_S},
    {"fault": "hang"},
    {"fault": "reset"},
    {"fault": "truncate"},
    {"fault": "malformed"},
    {"fault": "wrong_schema"},
    {"fault": "nan"},
    {"fault": "huge", "size_bytes": 100_000},
    {"fault": "huge"},
]


def attempt_of(fault: str, **params: Any) -> int:
    """The attempt number on which the menu server injects this fault."""
    return FIRST_MENU_ATTEMPT + MENU.index({"fault": fault, **params})


@pytest.fixture(scope="module")
def menu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    """One server for the module whose faults are chosen by the attempt header."""
    rules = [
        rule | {"attempts": [attempt]} for attempt, rule in enumerate(MENU, FIRST_MENU_ATTEMPT)
    ]
    with FaultServer({"routes": {"*": rules}}, tmp_path_factory.mktemp("menu")) as server:
        yield server


# --- normal answers ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (ATS, FEATURES, {"prediction": predict_ats(Features(**FEATURES))}),
        (RESP, FEATURES, {"prediction": predict_resp(Features(**FEATURES))}),
        (OFFER, PREDICTION, {"offer": assign_offer(Prediction(**PREDICTION))}),
        (OFFER, PREDICTION | {"ats_prediction": 400.0}, {"offer": "OFFER_2"}),
    ],
)
async def test_without_a_fault_it_answers_like_the_bundled_models(
    menu: FaultServer, path: str, body: dict[str, float], expected: dict[str, Any]
) -> None:
    async with client(menu) as http:
        reply = await call(http, path, body)
    assert (reply.status, json.loads(reply.body)) == (200, expected)


@pytest.mark.anyio
async def test_root_answers_pong(menu: FaultServer) -> None:
    async with client(menu) as http, http.get("/") as response:
        assert (response.status, await response.json()) == (200, {"msg": "pong"})


@pytest.mark.anyio
@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("body", [{}, {"AVG_POINTS_BOUGHT": "many"}, [1, 2]])
async def test_an_invalid_body_is_refused_with_422(menu: FaultServer, path: str, body: Any) -> None:
    async with client(menu) as http:
        reply = await call(http, path, body)
    assert reply.status == 422
    assert json.loads(reply.body)["detail"]


@pytest.mark.anyio
async def test_a_rule_limited_to_attempts_spares_calls_without_the_header(
    menu: FaultServer,
) -> None:
    async with client(menu) as http:
        reply = await call(http, attempt=None)
    assert reply.status == 200


# --- each fault kind --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "retry_after"),
    [(429, "1"), (503, "3600"), (503, "Wed, 21 Oct 2026 07:28:00 GMT"), (500, None)],
)
async def test_a_status_fault_answers_its_code_and_retry_after(
    menu: FaultServer, code: int, retry_after: str | None
) -> None:
    params = {"code": code} if retry_after is None else {"code": code, "retry_after": retry_after}
    async with client(menu) as http:
        reply = await call(http, attempt=attempt_of("status", **params))
    assert (reply.status, reply.headers.get("Retry-After")) == (code, retry_after)


@pytest.mark.anyio
async def test_a_slow_fault_answers_normally_after_its_delay(menu: FaultServer) -> None:
    async with client(menu) as http:
        reply = await call(http, member="slow", attempt=attempt_of("slow", delay_s=SLOW_S))
        # Sent once the slow answer came, so the log's gap between the two bounds the delay.
        await call(http, member="after-slow")
    assert (reply.status, json.loads(reply.body)) == (200, {"prediction": 85.0})
    slow, after = menu.requests_for(member="slow")[0], menu.requests_for(member="after-slow")[0]
    # The loop's monotonic sleep against the log's wall clock: allow a little drift.
    assert after["t"] - slow["t"] >= SLOW_S - 0.01


@pytest.mark.anyio
async def test_a_hang_fault_keeps_the_client_waiting_until_its_timeout(menu: FaultServer) -> None:
    async with client(menu, total_s=0.3) as http:
        with pytest.raises(TimeoutError):
            await call(http, attempt=attempt_of("hang"))


@pytest.mark.anyio
async def test_a_reset_fault_is_a_connection_error(menu: FaultServer) -> None:
    async with client(menu) as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, attempt=attempt_of("reset"))


@pytest.mark.anyio
async def test_a_reset_fault_resets_the_tcp_connection(menu: FaultServer) -> None:
    with pytest.raises(anyio.BrokenResourceError) as caught:
        await raw_exchange(menu, attempt_of("reset"))
    assert isinstance(caught.value.__cause__, ConnectionResetError)


@pytest.mark.anyio
async def test_a_truncate_fault_is_a_payload_error(menu: FaultServer) -> None:
    async with client(menu) as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            await call(http, attempt=attempt_of("truncate"))


@pytest.mark.anyio
async def test_a_truncate_fault_sends_less_than_its_content_length(menu: FaultServer) -> None:
    head, _, body = (await raw_exchange(menu, attempt_of("truncate"))).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    lengths = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    assert len(lengths) == 1
    assert 0 < len(body) < int(lengths[0].split(b":")[1])


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "field"), FIELDS)
async def test_a_malformed_fault_answers_200_with_a_cut_json_body(
    menu: FaultServer, path: str, field: str
) -> None:
    async with client(menu) as http:
        reply = await call(http, path, attempt=attempt_of("malformed"))
    assert (reply.status, reply.body) == (200, f'{{"{field}": '.encode())
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.body)


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "field"), FIELDS)
async def test_a_nan_fault_answers_200_with_a_literal_nan(
    menu: FaultServer, path: str, field: str
) -> None:
    async with client(menu) as http:
        reply = await call(http, path, attempt=attempt_of("nan"))
    assert (reply.status, reply.body) == (200, f'{{"{field}": NaN}}'.encode())
    assert math.isnan(json.loads(reply.body)[field])


@pytest.mark.anyio
@pytest.mark.parametrize("path", POST_ROUTES)
async def test_a_wrong_schema_fault_answers_200_without_the_field(
    menu: FaultServer, path: str
) -> None:
    async with client(menu) as http:
        reply = await call(http, path, attempt=attempt_of("wrong_schema"))
    assert (reply.status, json.loads(reply.body)) == (200, {"unexpected": 1})


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "field"), FIELDS)
@pytest.mark.parametrize("size", [100_000, None])
async def test_a_huge_fault_answers_valid_json_of_its_size(
    menu: FaultServer, path: str, field: str, size: int | None
) -> None:
    params = {} if size is None else {"size_bytes": size}
    async with client(menu) as http:
        reply = await call(http, path, attempt=attempt_of("huge", **params))
    assert (reply.status, len(reply.body)) == (200, size or DEFAULT_HUGE_BYTES)
    assert json.loads(reply.body)[field] == ("OFFER_1" if field == "offer" else 1.0)


@pytest.mark.anyio
async def test_a_route_s_own_rules_come_before_the_star_rules(
    serve: Callable[..., FaultServer],
) -> None:
    plan = {"routes": {ATS: [always("status", code=503)], "*": [always("status", code=500)]}}
    server = serve(plan)
    async with client(server) as http:
        statuses = [(await call(http, path)).status for path in POST_ROUTES]
        async with http.get("/") as pong:
            assert pong.status == 200
    assert statuses == [503, 500, 500]


# --- deterministic draws ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_per_member_rule_hits_the_same_members_on_every_attempt(
    serve: Callable[..., FaultServer],
) -> None:
    plan = {"routes": {"*": [{"fault": "status", "code": 503, "rate": 0.3, "per": "member"}]}}
    server = serve(plan)
    members = [f"m-{n}" for n in range(60)]
    hit: dict[int, set[str]] = {attempt: set() for attempt in (1, 2, 3)}
    async with client(server) as http:
        for attempt in hit:
            for member in members:
                if (await call(http, member=member, attempt=attempt)).status == 503:
                    hit[attempt].add(member)
    assert hit[1] == hit[2] == hit[3]
    assert 0 < len(hit[1]) < len(members)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [None, 7])
async def test_a_per_call_rule_hits_about_its_rate_and_as_the_plan_draws(
    serve: Callable[..., FaultServer], seed: int | None
) -> None:
    plan = {"seed": 3, "routes": {ATS: [{"fault": "status", "code": 503, "rate": 0.5}]}}
    server = serve(plan, seed=seed)
    calls = [(f"m-{n}", attempt) for n in range(100) for attempt in (1, 2, 3, 4)]
    async with client(server) as http:
        hits = {(m, a) for m, a in calls if (await call(http, member=m, attempt=a)).status == 503}
    assert 150 <= len(hits) <= 250
    # The server is another process: equal draws show the hash does not depend on the process.
    expected = Plan.model_validate(plan | {"seed": 3 if seed is None else seed})
    assert hits == faulted(expected, calls)
    # A retry may succeed where the first attempt failed.
    assert any((m, 1) in hits and (m, 2) not in hits for m, _ in calls)


def test_the_server_refuses_a_bad_plan_file(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"routes": {"*": [{"fault": "status"}]}}')
    command = [sys.executable, "-m", "tests.faults.server", "--plan", str(tmp_path / "plan.json")]
    command += ["--log", str(tmp_path / "log.jsonl")]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "bad plan" in done.stderr
    assert "needs code" in done.stderr


# --- the request log --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_log_records_every_request_in_order(serve: Callable[..., FaultServer]) -> None:
    server = serve({"routes": {RESP: [always("status", code=503)]}})
    async with client(server) as http:
        async with http.get("/"):
            pass
        await call(http, ATS, member="m-1", attempt=1)
        await call(http, RESP, member="m-1", attempt=2)
        await call(http, OFFER, member=None, attempt=None)
        await call(http, "/ml/nope", member="m-2", attempt=1)
    log = server.requests()
    assert [(e["path"], e["member"], e["attempt"], e["fault"]) for e in log] == [
        ("/", None, None, None),
        (ATS, "m-1", 1, None),
        (RESP, "m-1", 2, "status"),
        (OFFER, None, None, None),
        ("/ml/nope", "m-2", 1, None),
    ]
    assert [e["t"] for e in log] == sorted(e["t"] for e in log)
    assert server.requests_for(path=RESP, member="m-1") == [log[2]]


@pytest.mark.anyio
async def test_the_log_records_each_requests_id_as_received(
    serve: Callable[..., FaultServer],
) -> None:
    server = serve({})
    async with client(server) as http:
        await call(http, ATS, member="m-1", attempt=1, request_id="run-1:m-1:ats:1")
        await call(http, ATS, member="m-1", attempt=2)
    assert [e["request_id"] for e in server.requests()] == ["run-1:m-1:ats:1", None]
