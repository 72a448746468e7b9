"""The HTTP/1.1 transport (:mod:`~offerflow.pipeline.endpoints.transport`) against real servers.

aiohttp servers stand in for ordinary HTTP servers; raw ``asyncio`` servers (:class:`Wire`)
write exact bytes on the wire (chunked, close-delimited, garbage, a hang, a close after
answering), keep every request's bytes and count the connections the client opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from aiohttp import web
from multidict import CIMultiDict

from offerflow.pipeline.endpoints import connections
from offerflow.pipeline.endpoints.transport import HttpClient, Response, header_lines, header_value
from tests.local_http import serve_route

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.IGNORECASE)


# -- a raw server: exact bytes on the wire ---------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the raw server does with one request."""

    #: written one after the other, a short pause between them (so they arrive apart)
    parts: tuple[bytes, ...] = (OK,)
    #: close the connection once the parts are written (after ``linger_s``)
    close: bool = False
    linger_s: float = 0.0
    #: write nothing and wait until the client goes away
    hang: bool = False


@dataclass
class Wire:
    """A raw server's script (one reply per request, the last repeats) and what it saw."""

    replies: list[Reply]
    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    #: set when the server saw a request / when a connection ended (either side closed it)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: list[asyncio.Task[object]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.append(handler)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()
            self.ended.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _CONTENT_LENGTH.search(head)
            self.requests.append(head + await reader.readexactly(int(length[1]) if length else 0))
            self.received.set()
            reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
            if reply.hang:
                await reader.read()  # until the client closes or resets
                return
            for index, part in enumerate(reply.parts):
                if index:
                    await asyncio.sleep(0.01)
                writer.write(part)
                await writer.drain()
            if reply.close:
                await asyncio.sleep(reply.linger_s)
                return


@contextlib.asynccontextmanager
async def serve_raw(*replies: Reply, path: str = "/predict") -> AsyncIterator[Wire]:
    """A raw server on 127.0.0.1 (port 0) answering with ``replies``; yields its :class:`Wire`."""
    wire = Wire(list(replies))
    server = await asyncio.start_server(wire.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield wire
    finally:
        server.close()
        for writer in wire.writers:
            writer.transport.abort()
        await asyncio.gather(*wire.handlers, return_exceptions=True)
        await server.wait_closed()


# -- an aiohttp server that records what it saw ----------------------------------------------


@dataclass
class Seen:
    """Each request an aiohttp server got: method, headers, body, and its connection."""

    methods: list[str] = field(default_factory=list)
    headers: list[CIMultiDict[str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    transports: list[object] = field(default_factory=list)  # kept alive: their ids stay unique

    async def record(self, request: web.Request) -> bytes:
        self.methods.append(request.method)
        self.headers.append(request.headers.copy())
        self.transports.append(request.transport)
        body = await request.read()
        self.bodies.append(body)
        return body

    @property
    def connections(self) -> int:
        return len({id(transport) for transport in self.transports})


def _unused_port() -> int:
    """A port on 127.0.0.1 that was bound, then closed: nothing listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- keep-alive ------------------------------------------------------------------------------


async def test_a_keep_alive_connection_is_reused_for_sequential_posts() -> None:
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=(await seen.record(request))[::-1])

    bodies = [b'{"member": "m1"}', b"", b"a\r\n\r\nb" * 1000]
    async with serve_route("/predict", handle) as url, HttpClient() as client:
        fixed = header_lines([("X-Fixed", "f"), ("Content-Type", "application/json")])
        route = client.route(url, headers=fixed)
        for attempt, body in enumerate(bodies):
            more = header_lines([("X-Attempt", str(attempt))])
            answer = await route.send(body, timeout_s=2, headers=more)
            assert answer == Response(200, body[::-1])
    assert seen.bodies == bodies
    assert [h["Content-Length"] for h in seen.headers] == [str(len(b)) for b in bodies]
    assert [h.getall("X-Fixed") for h in seen.headers] == [["f"]] * 3
    assert [h["Content-Type"] for h in seen.headers] == ["application/json"] * 3
    assert [h.getall("X-Attempt") for h in seen.headers] == [["0"], ["1"], ["2"]]
    assert seen.connections == 1


async def test_two_concurrent_requests_open_two_connections_that_are_then_reused() -> None:
    seen = Seen()
    pairs = [anyio.Event(), anyio.Event()]  # both requests of a round arrived

    async def handle(request: web.Request) -> web.StreamResponse:
        await seen.record(request)
        pair = pairs[(len(seen.bodies) - 1) // 2]
        if len(seen.bodies) % 2 == 0:
            pair.set()
        with anyio.fail_after(2):  # answers only once the other request is in flight too
            await pair.wait()
        return web.Response(body=b"ok")

    answers: list[Response] = []
    async with serve_route("/predict", handle) as url, HttpClient() as client:
        route = client.route(url)

        async def send() -> None:
            answers.append(await route.send(b"{}", timeout_s=3))

        for _ in range(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                tg.start_soon(send)
    assert answers == [Response(200, b"ok")] * 4
    assert seen.connections == 2
    assert {id(t) for t in seen.transports[2:]} == {id(t) for t in seen.transports[:2]}


# -- framing of answers ----------------------------------------------------------------------


async def test_a_chunked_answer_is_assembled_into_the_whole_body() -> None:
    chunked = Reply(
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"1\r\n \r\n",
            b"5\r\nworld\r\n0\r\n\r\n",
        )
    )
    async with serve_raw(chunked) as wire, HttpClient() as client:
        route = client.route(wire.url)
        first = await route.send(b"{}", timeout_s=2)
        second = await route.send(b"{}", timeout_s=2)
    assert first == second == Response(200, b"hello world")
    assert wire.connections == 1  # a chunked answer ends where it says: the connection is kept


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        # the body runs until the server closes the connection
        (
            Reply(
                (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the ", b"close"),
                close=True,
            ),
            b"until the close",
        ),
        # the server keeps the connection open: only the header says not to reuse it
        (Reply((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",)), b"ok"),
    ],
    ids=["close-delimited", "connection-close"],
)
async def test_an_answer_that_ends_its_connection_is_whole_and_not_reused(
    reply: Reply, body: bytes
) -> None:
    async with serve_raw(reply) as wire, HttpClient() as client:
        route = client.route(wire.url)
        first = await route.send(b"{}", timeout_s=2)
        second = await route.send(b"{}", timeout_s=2)
    assert first == second == Response(200, body)
    assert wire.connections == 2
    assert len(wire.requests) == 2


async def test_an_idle_connection_closed_by_the_server_is_replaced_without_an_error() -> None:
    async with serve_raw(Reply(close=True, linger_s=0.05)) as wire, HttpClient() as client:
        route = client.route(wire.url)
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
        with anyio.fail_after(2):
            await wire.ended.wait()  # the server closed the kept-alive connection
        await anyio.sleep(0.05)  # the client's loop sees the close
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert wire.connections == 2


async def test_a_body_over_the_cap_is_cut_at_one_byte_more_and_not_reused() -> None:
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(await seen.record(request)))

    async with serve_route("/predict", handle) as url, HttpClient(max_body=10) as client:
        route = client.route(url)
        over = await route.send(b"100", timeout_s=2)
        at_cap = await route.send(b"10", timeout_s=2)
        again = await route.send(b"10", timeout_s=2)
    assert over == Response(200, b"x" * 11)
    assert at_cap == again == Response(200, b"x" * 10)
    # the cut connection was dropped; the one of the answer at the cap was kept
    assert seen.connections == 2
    assert seen.transports[1] is seen.transports[2]


# -- failures --------------------------------------------------------------------------------


async def test_a_hanging_server_times_out_and_its_connection_is_dropped() -> None:
    async with serve_raw(Reply(hang=True), Reply()) as wire, HttpClient() as client:
        route = client.route(wire.url)
        with pytest.raises(TimeoutError):
            await route.send(b"{}", timeout_s=0.2)
        with anyio.fail_after(2):
            await wire.ended.wait()  # the client closed the hung connection
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert wire.connections == 2


async def test_a_refused_connection_is_a_connection_error() -> None:
    async with HttpClient(connect_timeout_s=2) as client:
        route = client.route(f"http://127.0.0.1:{_unused_port()}/predict")
        with pytest.raises(ConnectionError):
            await route.send(b"{}", timeout_s=2)


@pytest.mark.parametrize(
    "reply",
    [
        Reply((b"SSH-2.0-OpenSSH_9.6\r\n",)),
        Reply((b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part",), close=True),
        Reply((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",), close=True),
        Reply((b"",), close=True),
    ],
    ids=["not-http", "closed-mid-body", "closed-mid-chunk", "closed-before-answering"],
)
async def test_a_broken_answer_is_a_connection_error(reply: Reply) -> None:
    async with serve_raw(reply) as wire, HttpClient() as client:
        route = client.route(wire.url)
        with pytest.raises(ConnectionError):
            await route.send(b"{}", timeout_s=2)


async def test_an_interim_1xx_answer_is_skipped_for_the_final_one() -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    async with serve_raw(Reply((early_hints, OK))) as wire, HttpClient() as client:
        route = client.route(wire.url)
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert wire.connections == 1


async def test_statuses_are_returned_with_retry_after() -> None:
    seen = Seen()
    answers = {
        b"503": web.Response(status=503, body=b"busy", headers={"Retry-After": "7"}),
        b"429": web.Response(
            status=429, body=b"slow", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
        ),
        b"404": web.Response(status=404, body=b"gone"),
        b"200": web.Response(body=b"fine"),
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        return answers[await seen.record(request)]

    async with serve_route("/predict", handle) as url, HttpClient() as client:
        route = client.route(url)
        got = [await route.send(status, timeout_s=2) for status in answers]
    assert got == [
        Response(503, b"busy", "7"),
        Response(429, b"slow", "Wed, 21 Oct 2015 07:28:00 GMT"),
        Response(404, b"gone", None),
        Response(200, b"fine", None),
    ]
    assert seen.connections == 1  # an error status keeps the connection


async def test_a_cancelled_request_drops_its_connection() -> None:
    async with serve_raw(Reply(hang=True), Reply()) as wire, HttpClient() as client:
        route = client.route(wire.url)

        async def send() -> None:
            await route.send(b"{}", timeout_s=5)
            pytest.fail("the request was answered while the server hangs")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            with anyio.fail_after(2):
                await wire.received.wait()  # the request is in flight
            tg.cancel_scope.cancel()
        with anyio.fail_after(2):
            await wire.ended.wait()  # the client closed the cancelled request's connection
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert wire.connections == 2


# -- requests --------------------------------------------------------------------------------


async def test_header_values_cannot_inject_headers_and_names_must_be_tokens() -> None:
    assert header_value("m1\r\nX-Evil: yes") == b"m1%0D%0AX-Evil%3A%20yes"
    assert header_value("müller") == "müller".encode()
    assert header_value("a b/c=d;e") == b"a b/c=d;e"
    for name in ("Bad Name", "Bad:Name", "X\r\nEvil", ""):
        with pytest.raises(ValueError, match="header name"):
            header_lines([(name, "v")])

    async with serve_raw(Reply()) as wire, HttpClient() as client:
        fixed = header_lines([("X-Member", "m1\r\nX-Evil: yes"), ("X-Name", "müller")])
        assert await client.route(wire.url, headers=fixed).send(b"{}", timeout_s=2) == Response(
            200, b"ok"
        )
    lines = wire.requests[0].split(b"\r\n")
    assert [line for line in lines if line.lower().startswith(b"x-")] == [
        b"X-Member: m1%0D%0AX-Evil%3A%20yes",
        "X-Name: müller".encode(),
    ]


async def test_get_sends_a_bodiless_get_and_route_refuses_urls_that_are_not_http() -> None:
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        await seen.record(request)
        return web.Response(body=b"status: fine")

    async with serve_route("/status", handle, method="GET") as url, HttpClient() as client:
        assert await client.get(url, timeout_s=2) == Response(200, b"status: fine")
        assert await client.get(url + "?full=1", timeout_s=2) == Response(200, b"status: fine")
        for bad in ("ftp://127.0.0.1/status", "/status", "http:///status", "127.0.0.1:80"):
            with pytest.raises(ValueError, match="not an http"):
                client.route(bad)
    assert seen.methods == ["GET", "GET"]
    assert seen.bodies == [b"", b""]
    assert seen.connections == 1


async def test_the_host_header_names_the_port_when_the_url_has_one() -> None:
    async with serve_raw(Reply()) as wire, HttpClient() as client:
        assert await client.route(wire.url).send(b"{}", timeout_s=2) == Response(200, b"ok")
        port = wire.url.split(":")[2].split("/")[0]
        without_port = client.route("http://example.com/a?b=1")
        ipv6 = client.route("https://[::1]:8443/", method="GET")
    head = wire.requests[0]
    assert head.startswith(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:%b\r\n" % port.encode())
    assert without_port.head == b"POST /a?b=1 HTTP/1.1\r\nHost: example.com\r\n"
    assert ipv6.head == b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n"


# -- the keep-alive race, and a connection out of step ----------------------------------------

#: read the request, answer nothing, close: what a server's idle timeout does to a request
#: that crossed it on the wire
SILENT_CLOSE = Reply(parts=(), close=True)


async def test_a_rested_connection_closed_as_a_request_went_out_is_retried_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        connections, "_RESEND_AFTER_IDLE_S", 0.0
    )  # every idle connection has rested
    async with serve_raw(Reply(), SILENT_CLOSE, Reply()) as wire, HttpClient() as client:
        route = client.route(wire.url)
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert len(wire.requests) == 3  # the second request went out twice
    assert wire.connections == 2


async def test_a_busy_connection_closed_before_answering_is_the_endpoints_error() -> None:
    async with serve_raw(Reply(), SILENT_CLOSE, Reply()) as wire, HttpClient() as client:
        route = client.route(wire.url)
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
        with pytest.raises(ConnectionResetError, match="before answering"):
            await route.send(b"{}", timeout_s=2)
    assert len(wire.requests) == 2  # not sent again: the retry policy decides


async def test_bytes_after_an_answer_put_the_connection_out_of_use() -> None:
    out_of_step = Reply(parts=(OK + b"HTTP/1.1 2",))
    async with serve_raw(out_of_step, Reply()) as wire, HttpClient() as client:
        route = client.route(wire.url)
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
        assert await route.send(b"{}", timeout_s=2) == Response(200, b"ok")
    assert wire.connections == 2


def test_only_get_and_post_are_sent() -> None:
    with pytest.raises(ValueError, match="HEAD"):
        HttpClient().route("http://127.0.0.1:1/x", method="HEAD")
