"""The body limit: 413 before a body past it is read whole, whether it has a length or not."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from offerflow.serving import BundledServer
from offerflow.serving.limits import MAX_BODY_BYTES, BodyLimit
from tests.samples import PLAIN_FEATURES

pytestmark = pytest.mark.timeout(60)

LIMIT = 10
TOO_LARGE = {"detail": f"request body too large: the limit is {LIMIT} bytes"}


# --- the middleware, in process, with a limit of 10 bytes -------------------------------------


class Inner:
    """The app behind the middleware: records what it was given and what it read."""

    def __init__(self) -> None:
        self.called = False
        self.receive: Receive | None = None
        self.messages: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        self.receive = receive
        self.messages.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """One request's side of the ASGI exchange: the body in chunks, and what was sent back."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    def json(self) -> object:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def _scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}


@pytest.mark.anyio
async def test_a_length_past_the_limit_is_413_without_reading_the_body_or_calling_the_app() -> None:
    inner, client = Inner(), Client(b"x" * 11)
    await BodyLimit(inner, LIMIT)(_scope((b"content-length", b"11")), client.receive, client.send)
    assert (client.status, client.json(), client.reads, inner.called) == (413, TOO_LARGE, 0, False)
    assert (b"connection", b"close") in client.sent[0]["headers"]


@pytest.mark.anyio
async def test_a_length_within_the_limit_passes_the_request_through_untouched() -> None:
    inner, client = Inner(), Client(b"x" * 10)
    await BodyLimit(inner, LIMIT)(_scope((b"content-length", b"10")), client.receive, client.send)
    assert client.status == 200
    assert inner.receive == client.receive  # not wrapped: nothing to pay per message


@pytest.mark.anyio
async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    inner, client = Inner(), Client(b"1234", b"5678", b"901", b"never read")
    chunked = (b"transfer-encoding", b"chunked")
    await BodyLimit(inner, LIMIT)(_scope(chunked), client.receive, client.send)
    assert (client.status, client.json(), client.reads, inner.called) == (413, TOO_LARGE, 3, False)


@pytest.mark.anyio
async def test_a_chunked_body_within_the_limit_reaches_the_app_whole() -> None:
    inner, client = Inner(), Client(b"1234", b"5678", b"90")
    chunked = (b"transfer-encoding", b"chunked")
    await BodyLimit(inner, LIMIT)(_scope(chunked), client.receive, client.send)
    assert client.status == 200
    assert inner.messages == [{"type": "http.request", "body": b"1234567890", "more_body": False}]


@pytest.mark.anyio
async def test_other_events_pass_through() -> None:
    inner, client = Inner(), Client(b"")
    await BodyLimit(inner, LIMIT)({"type": "lifespan"}, client.receive, client.send)
    assert inner.called


# --- the bundled server -----------------------------------------------------------------------


@pytest.fixture
def connection(server: BundledServer) -> Iterator[socket.socket]:
    """A raw connection to the bundled server, which fails a read after 10 s of silence."""
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        yield sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of an answer that ends with the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        if "content-length" in headers and len(body) >= int(headers["content-length"]):
            return int(lines[0].split()[1]), headers, body
    raise AssertionError(f"the connection ended before a whole answer: {data[:200]!r}")


def _request(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def _batch_of(size: int) -> bytes:
    """A json-batch body of exactly ``size`` bytes: one member, padded with spaces."""
    body = orjson.dumps({"instances": [PLAIN_FEATURES]})
    return body + b" " * (size - len(body))


def _chunked(body: bytes, chunk: int = 1 << 20) -> bytes:
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_body_declared_past_the_limit_is_413_before_any_of_it_is_sent(
    connection: socket.socket,
) -> None:
    length = MAX_BODY_BYTES + 1
    connection.sendall(_request("/ml/ats/predict/batch", f"Content-Length: {length}"))
    status, headers, body = _answer(connection)
    assert status == 413
    assert headers["connection"] == "close"
    assert orjson.loads(body) == {
        "detail": f"request body too large: the limit is {MAX_BODY_BYTES} bytes"
    }


def test_a_chunked_body_past_the_limit_is_413(connection: socket.socket) -> None:
    request = _request("/ml/ats/predict/batch", "Transfer-Encoding: chunked")
    connection.sendall(request + _chunked(_batch_of(MAX_BODY_BYTES + 1)))
    status, _headers, body = _answer(connection)
    assert status == 413
    assert orjson.loads(body)["detail"].startswith("request body too large")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_of_exactly_the_limit_is_served(connection: socket.socket, framing: str) -> None:
    body = _batch_of(MAX_BODY_BYTES)
    if framing == "length":
        request = _request("/ml/ats/predict/batch", f"Content-Length: {len(body)}") + body
    else:
        request = _request("/ml/ats/predict/batch", "Transfer-Encoding: chunked") + _chunked(body)
    connection.sendall(request)
    status, _headers, answer = _answer(connection)
    assert (status, orjson.loads(answer)) == (200, {"predictions": [85.0]})
