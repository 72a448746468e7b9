"""Connections of the HTTP/1.1 transport: the pools per origin, the exchanges, the parsing.

:mod:`~offerflow.pipeline.endpoints.transport` encodes requests and decides where they go; this
module opens connections (directly, or through a proxy's ``CONNECT`` tunnel), sends a request
on one and parses its answer with httptools. A connection idle for a while that the server
closed just as a request went out on it (the keep-alive race: the server's idle timeout, no
byte of an answer arrived) is not an error of the endpoint: the request is sent once more on a
new connection, within the same timeout. On a connection in steady use the same failure is the
endpoint's, and is raised.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

__all__ = ["Limits", "Origin", "Response", "Tunnel"]

# a request that finds its kept-alive connection closed by the server is sent again on a new
# one when the connection had been idle this long (servers close idle ones after 5 s or more)
_RESEND_AFTER_IDLE_S = 1.0
# the most of a proxy's answer to CONNECT that is read before it counts as not HTTP
_MAX_TUNNEL_ANSWER = 16384


class Limits(Protocol):
    """What the connections of a client share: its connect timeout and body cap."""

    connect_timeout_s: float
    max_body: int


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: its status, its body (at most ``max_body + 1`` bytes), ``Retry-After`` and
    ``Location`` (of a redirect, which is not followed)."""

    status: int
    body: bytes
    retry_after: str | None = None
    location: str | None = None


class _Stale(ConnectionResetError):
    """The connection closed before any byte of an answer arrived."""


class Origin:
    """The connections to one scheme, host and port: idle ones are reused, last in first out.

    ``host`` and ``port`` are where connections go: the origin's, or its proxy's.
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        client: Limits,
        *,
        has_client_cert: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.client = client
        self.has_client_cert = has_client_cert
        self.idle: list[_Connection] = []

    async def exchange(self, request: bytes, timeout_s: float) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = self._idle_connection()
        if connection is not None:
            rested = loop.time() - connection.idle_since >= _RESEND_AFTER_IDLE_S
            try:
                return await self._exchange_on(connection, request, deadline, timeout_s)
            except _Stale as stale:
                if not rested:
                    raise ConnectionResetError(str(stale)) from None
                # the server's idle timeout closed it as the request went out: on a new one
        connection = await self._connect(loop, deadline, timeout_s)
        try:
            return await self._exchange_on(connection, request, deadline, timeout_s)
        except _Stale as stale:
            raise ConnectionResetError(f"{stale}{self._new_connection_hint()}") from None

    def _new_connection_hint(self) -> str:
        """What a new connection closed before any answer may mean, over TLS without our cert.

        A server that requires a client certificate may close the connection without saying
        why (an asyncio server does not send TLS's "certificate required" alert).
        """
        if self.context is None or self.has_client_cert:
            return ""
        return " (over TLS: a server that requires a client certificate does this; see cert_file)"

    async def _exchange_on(
        self, connection: _Connection, request: bytes, deadline: float, timeout_s: float
    ) -> Response:
        answer = connection.send(request, self.client.max_body)
        timer = asyncio.get_running_loop().call_at(deadline, connection.expire, timeout_s)
        try:
            response = await answer
        except BaseException:
            connection.abort()  # cancelled or failed mid-exchange: its state is unknown
            raise
        finally:
            timer.cancel()
        if connection.reusable:
            connection.idle_since = asyncio.get_running_loop().time()
            self.idle.append(connection)
        else:
            connection.abort()
        return response

    def _idle_connection(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, deadline: float, timeout_s: float
    ) -> _Connection:
        limit = min(self.client.connect_timeout_s, deadline - loop.time())
        try:
            async with asyncio.timeout(limit):
                return await self._open(loop)
        except TimeoutError:
            if limit < self.client.connect_timeout_s:
                raise TimeoutError(f"no answer within {timeout_s:.3g}s (connecting)") from None
            raise TimeoutError(f"could not connect within {limit:.3g}s") from None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A new connection, its TLS handshake done (certificates verified) if it has one."""
        _, protocol = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self.context,
            server_hostname=self.host if self.context is not None else None,
        )
        return protocol

    def close(self) -> None:
        for connection in self.idle:
            connection.abort()
        self.idle.clear()


class Tunnel(Origin):
    """An ``https`` origin behind a proxy: each connection is a ``CONNECT`` tunnel through it,
    then TLS with the origin (``target``) inside, verified as if connected directly."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        client: Limits,
        *,
        has_client_cert: bool,
        target: str,
        connect: bytes,
    ) -> None:
        super().__init__(host, port, context, client, has_client_cert=has_client_cert)
        self.target = target
        self.connect = connect

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        transport, answer = await loop.create_connection(_TunnelAnswer, self.host, self.port)
        try:
            transport.write(self.connect)
            status = await answer.status
            if not 200 <= status < 300:
                raise ConnectionError(f"the proxy refused the tunnel: HTTP {status}")
            connection = _Connection()
            assert self.context is not None, "a tunnel carries TLS"
            inner = await loop.start_tls(
                transport, connection, self.context, server_hostname=self.target
            )
        except BaseException:
            transport.abort()
            raise
        assert inner is not None, "start_tls gives a transport or raises"
        connection.connection_made(inner)  # start_tls does not tell the protocol itself
        return connection


class _TunnelAnswer(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``: its status, once its head has arrived."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            return  # bytes before our TLS hello: the handshake will fail on them
        self._head += data
        if b"\r\n\r\n" not in self._head:
            if len(self._head) > _MAX_TUNNEL_ANSWER:
                self.status.set_exception(ConnectionError("the proxy's answer is not HTTP"))
            return
        line = self._head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
            self.status.set_exception(ConnectionError("the proxy's answer is not HTTP"))
            return
        self.status.set_result(int(line[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            reason = "" if exc is None else f": {exc}"
            self.status.set_exception(
                ConnectionResetError(f"the proxy closed the connection before the tunnel{reason}")
            )


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; httptools calls its ``on_*`` methods."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0  # loop.time() when its last answer arrived
        self._answer: asyncio.Future[Response] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._max_body = 0
        self._retry_after: str | None = None
        self._location: str | None = None
        self._headers_done = False
        self._framed = False  # the answer's length is known: Content-Length or chunked
        self._answering = False  # some of an answer has arrived

    # -- the exchange ----------------------------------------------------------------------

    def send(self, request: bytes, max_body: int) -> asyncio.Future[Response]:
        assert self.transport is not None, "sent before the connection was made"
        assert self._answer is None, "one request at a time"
        self._answer = answer = asyncio.get_running_loop().create_future()
        self._chunks = []
        self._size = 0
        self._max_body = max_body
        self._retry_after = self._location = None
        self._headers_done = self._framed = self.reusable = self._answering = False
        self.transport.write(request)
        return answer

    def expire(self, timeout_s: float) -> None:
        self._fail(TimeoutError(f"no answer within {timeout_s:.3g}s"))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, *, reusable: bool) -> None:
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            return
        self.reusable = reusable and not self.closed
        body = b"".join(self._chunks)[: self._max_body + 1]
        status = self.parser.get_status_code()
        answer.set_result(Response(status, body, self._retry_after, self._location))

    def _fail(self, error: BaseException) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing was asked: the connection is out of step
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"the answer is not HTTP/1.1: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._answer is None:
            return
        if self._headers_done and not self._framed:
            self._finish(reusable=False)  # the body ran until the server closed
        elif not self._answering:
            if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
                self._fail(exc)  # e.g. the server's alert that it requires our certificate
                return
            reason = "" if exc is None else f": {exc}"
            self._fail(_Stale(f"the server closed the connection before answering{reason}"))
        elif exc is not None:
            self._fail(ConnectionResetError(f"connection lost mid-answer: {exc}"))
        else:
            self._fail(ConnectionResetError("the server closed the connection mid-answer"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
        elif lowered == b"location":
            self._location = value.decode("latin-1")

    def on_message_begin(self) -> None:
        self._answering = True
        if self._answer is None:  # bytes after the answer: the connection is out of step
            self.abort()

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._answer is None:
            return
        self._chunks.append(body)
        self._size += len(body)
        if self._size > self._max_body:
            self._finish(reusable=False)  # the caller gets the first max_body + 1 bytes
            self.abort()

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # interim (1xx): the final one follows
            self._chunks, self._size, self._retry_after, self._location = [], 0, None, None
            self._headers_done = self._framed = False
            return
        self._finish(reusable=self.parser.should_keep_alive())
