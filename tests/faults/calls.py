"""The client side of the fault server's tests: calls as the pipeline's client makes them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from tests.faults.plan import ATTEMPT_HEADER, MEMBER_HEADER, POST_ROUTES, REQUEST_ID_HEADER, Plan
from tests.faults.process import FaultServer
from tests.samples import PLAIN_FEATURES

__all__ = [
    "ATS",
    "FEATURES",
    "OFFER",
    "PREDICTION",
    "RESP",
    "Reply",
    "always",
    "call",
    "client",
    "faulted",
    "logged",
    "raw_exchange",
]

ATS, RESP, OFFER = POST_ROUTES
#: the body of a model call: ATS 85.0
FEATURES = PLAIN_FEATURES
#: the body of an offer call: OFFER_1
PREDICTION = {"ats_prediction": 85.0, "resp_prediction": 0.5}


@dataclass(frozen=True, slots=True)
class Reply:
    """What a client received."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def always(fault: str, **params: Any) -> dict[str, Any]:
    """A rule that hits every call."""
    return {"fault": fault, "rate": 1.0, **params}


@contextlib.asynccontextmanager
async def client(server: FaultServer, total_s: float = 10) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on a server, whose calls give up after ``total_s``."""
    limits = aiohttp.ClientTimeout(total=total_s)
    async with aiohttp.ClientSession(server.base_url, timeout=limits) as http:
        yield http


async def call(
    http: aiohttp.ClientSession,
    path: str = ATS,
    body: Any = None,
    *,
    member: str | None = "m-1",
    attempt: int | None = 1,
    request_id: str | None = None,
) -> Reply:
    """POST a body (the sample one of the route unless given) with the client's headers."""
    headers = {} if member is None else {MEMBER_HEADER: member}
    if attempt is not None:
        headers[ATTEMPT_HEADER] = str(attempt)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    payload = (PREDICTION if path == OFFER else FEATURES) if body is None else body
    async with http.post(path, json=payload, headers=headers) as response:
        return Reply(response.status, dict(response.headers), await response.read())


async def raw_exchange(server: FaultServer, attempt: int) -> bytes:
    """Send a raw HTTP request for ATS on the given attempt; return all bytes until EOF."""
    body = json.dumps(FEATURES).encode()
    head = (
        f"POST {ATS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{ATTEMPT_HEADER}: {attempt}\r\n\r\n"
    )
    async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
        await stream.send(head.encode() + body)
        received = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                received += await stream.receive()
    return received


async def logged(server: FaultServer, member: str) -> list[dict[str, Any]]:
    """Wait until the server has logged a request of the member; return its requests."""
    with anyio.fail_after(10):
        # The log is another process's file: there is no event to wait on, so poll it.
        while not server.requests_for(member=member):  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return server.requests_for(member=member)


def faulted(plan: Plan, calls: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (member, attempt) calls on ATS that the plan gives a fault."""
    return {(member, attempt) for member, attempt in calls if plan.choose(ATS, member, attempt)}
