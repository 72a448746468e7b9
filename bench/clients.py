"""One client of the transport comparison: the same N POSTs, at most K in flight, timed inside.

``python -m bench.clients CLIENT --url URL --requests N --concurrency K`` sends N POSTs of
:data:`BODY` to URL with one of :data:`CLIENTS`, on uvloop as ``offerflow run`` is, and prints
one JSON object: the wall and CPU time (``time.process_time``: every thread of the process) of
the request phase, from the first request to the last answer, and how many answers were 200.

Every client is used as its documentation shows: one client object for all requests, its
keep-alive connection pool, the same fixed headers, a 10 s total and 5 s connect timeout, and
every answer's body read. K workers each send one request at a time, so at most K are in
flight. Each client imports its library inside its function, so that a child pays for the
import of its own library only and a library that is not installed fails only its own child.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import orjson

__all__ = ["BODY", "CLIENTS", "HEADERS", "REQUIRES", "Tally", "main"]

#: one member's 8 features of the default partner: the body of every request
BODY = orjson.dumps(
    {
        "AVG_POINTS_BOUGHT": 1250.0,
        "AVG_REVENUE_USD": 31.25,
        "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 1000.0,
        "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 25.0,
        "PCT_BUY_TRANSACTIONS": 0.6,
        "PCT_GIFT_TRANSACTIONS": 0.2,
        "PCT_REDEEM_TRANSACTIONS": 0.2,
        "DAYS_SINCE_LAST_TRANSACTION": 12.0,
    }
)
#: the fixed headers the pipeline's client sends, set once per client object
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# the default partner's per-request and connect timeouts
_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0

#: one request: None when the answer was a 200, else what went wrong
Send = Callable[[], Awaitable[str | None]]
#: a client for one URL, opened for the request phase: (url, concurrency) -> its ``send``
Opener = Callable[[str, int], AbstractAsyncContextManager[Send]]


@asynccontextmanager
async def _own(url: str, concurrency: int) -> AsyncIterator[Send]:
    """The project's transport, set up as the pipeline sets it up."""
    from offerflow.pipeline.endpoints.transport import HttpClient, header_lines

    # One HttpClient: an unbounded keep-alive pool per origin (the K workers bound it); the
    # request line and fixed headers encoded once in a Route; a total timer per request.
    async with HttpClient(connect_timeout_s=_CONNECT_TIMEOUT_S) as http:
        route = http.route(url, headers=header_lines(HEADERS.items()))

        async def send() -> str | None:
            try:
                answer = await route.send(BODY, timeout_s=_TIMEOUT_S)
            except OSError as exc:  # TimeoutError, ConnectionError
                return repr(exc)
            return None if answer.status == 200 else f"status {answer.status}"

        yield send


@asynccontextmanager
async def _pyreqwest(url: str, concurrency: int) -> AsyncIterator[Send]:
    """pyreqwest's async client, as its README shows it."""
    from pyreqwest.client import ClientBuilder
    from pyreqwest.exceptions import PyreqwestError

    # One Client: its default single-threaded Tokio runtime on a thread of its own, HTTP/1.1,
    # an unbounded keep-alive pool (the K workers bound it), no status checks of its own.
    builder = (
        ClientBuilder()
        .default_headers(HEADERS)
        .timeout(timedelta(seconds=_TIMEOUT_S))
        .connect_timeout(timedelta(seconds=_CONNECT_TIMEOUT_S))
    )
    async with builder.build() as client:

        async def send() -> str | None:
            try:
                response = await client.post(url).body_bytes(BODY).build().send()
                await response.bytes()
            except PyreqwestError as exc:
                return repr(exc)
            return None if response.status == 200 else f"status {response.status}"

        yield send


@asynccontextmanager
async def _aiohttp(url: str, concurrency: int) -> AsyncIterator[Send]:
    """aiohttp's ClientSession, as its documentation shows it."""
    import aiohttp

    # One ClientSession over a TCPConnector pooling as many keep-alive connections as there
    # are requests in flight; its defaults otherwise (its own User-Agent and Accept-Encoding
    # headers, cookie jar, DNS cache, no raise_for_status).
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers=HEADERS, timeout=timeout
    ) as session:

        async def send() -> str | None:
            try:
                async with session.post(url, data=BODY) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                return repr(exc)
            return None if response.status == 200 else f"status {response.status}"

        yield send


#: the clients compared, in the order they run within a repeat: the first is the reference
CLIENTS: dict[str, Opener] = {"own": _own, "pyreqwest": _pyreqwest, "aiohttp": _aiohttp}
#: the module each client needs, and the distribution whose version the results name
REQUIRES = {"own": "offerflow", "pyreqwest": "pyreqwest", "aiohttp": "aiohttp"}


@dataclass(slots=True)
class Tally:
    """What the request phase did."""

    requests: int = 0
    ok: int = 0
    first_error: str | None = None

    @property
    def failed(self) -> int:
        """Requests without a 200 answer: an error, a timeout or another status."""
        return self.requests - self.ok


async def fire(send: Send, requests: int, concurrency: int) -> Tally:
    """Send ``requests`` requests with ``concurrency`` workers, one request at a time each."""
    tally = Tally()
    remaining = iter(range(requests))  # shared: a free worker takes the next request

    async def worker() -> None:
        for _ in remaining:
            error = await send()
            tally.requests += 1
            if error is None:
                tally.ok += 1
            elif tally.first_error is None:
                tally.first_error = error

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, requests)):
            group.create_task(worker())
    return tally


async def _phase(opener: Opener, url: str, requests: int, concurrency: int) -> dict[str, object]:
    """Open the client, time the requests alone, close it: the figures to print."""
    async with opener(url, concurrency) as send:
        cpu_started = time.process_time()
        started = time.perf_counter()
        tally = await fire(send, requests, concurrency)
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
    return {
        "wall_s": round(wall_s, 4),
        "cpu_s": round(cpu_s, 4),
        "requests": tally.requests,
        "ok": tally.ok,
        "failed": tally.failed,
        "first_error": tally.first_error,
    }


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    """Send the requests with one client; print the request phase's figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__)
    parser.add_argument("client", choices=list(CLIENTS), help="the HTTP client to use")
    parser.add_argument("--url", required=True, help="where to POST, http://HOST:PORT/PATH")
    parser.add_argument("--requests", type=int, default=20_000, help="requests to send")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")

    # the same event loop as `offerflow run`: uvloop when it is installed
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        report = runner.run(_phase(CLIENTS[args.client], args.url, args.requests, args.concurrency))
    sys.stdout.write(orjson.dumps({"client": args.client, **report}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
