"""Calls through an HTTP proxy: a real one (proxy.py in a child process) and a scripted one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from offerflow.config import load_config
from offerflow.errors import EndpointConnectionError, EndpointTLSError
from offerflow.pipeline import client_for
from offerflow.pipeline.endpoints import Endpoint, ModelClient, Tls
from offerflow.serving import BundledServer
from tests.local_http import serve_route
from tests.partner_files import default_document, write_partner
from tests.proxies import ForwardProxy, forward_proxy
from tests.tls import Pki, make_pki, serve_https

pytestmark = pytest.mark.anyio

BOTH_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ],
)
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
BODY = orjson.dumps(FEATURES)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    with forward_proxy(tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https(pki: Pki) -> Iterator[str]:
    with serve_https(pki.cert_file, pki.key_file) as base_url:
        yield base_url


@dataclass
class Seen:
    """The request targets an origin got."""

    targets: list[str] = field(default_factory=list)


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, Seen]]:
    """A plain http origin on 127.0.0.1 answering every POST with a prediction."""
    seen = Seen()

    async def handle(request: web.Request) -> web.Response:
        seen.targets.append(request.path_qs)
        return web.json_response({"prediction": 1.5})

    async with serve_route("/predict", handle) as url:
        yield url, seen


def _client(url: str, *, proxy: str | None, tls: Tls | None = None) -> ModelClient:
    return ModelClient([Endpoint("ats", url, "prediction", tls=tls, proxy=proxy, retries=0)])


async def test_a_plain_http_call_goes_through_the_proxy_query_and_all(
    proxy: ForwardProxy, origin: tuple[str, Seen]
) -> None:
    url, seen = origin
    async with _client(f"{url}?api_key=k3y", proxy=proxy.url) as client:
        result = await client.call("ats", "m1", BODY)
    assert result.value == 1.5
    assert seen.targets == ["/predict?api_key=k3y"]  # the query still reaches the origin
    port = url.split(":")[2].split("/")[0]
    assert await proxy.wait_for(f"POST 127.0.0.1:{port}/predict")


@BOTH_LOOPS
async def test_an_https_call_goes_through_a_connect_tunnel_to_the_verified_origin(
    proxy: ForwardProxy, pki: Pki, https: str
) -> None:
    tunnel = f"CONNECT 127.0.0.1:{https.rsplit(':', 1)[1]}"
    before = len(proxy.lines(tunnel))
    async with _client(f"{https}/ml/ats/predict", proxy=proxy.url, tls=Tls(pki.ca_file)) as client:
        first = await client.call("ats", "m1", BODY)
        second = await client.call("ats", "m2", BODY)  # on the same tunnel, kept alive
    assert isinstance(first.value, float)
    assert first.value == second.value
    assert len(await proxy.wait_for(tunnel, before + 1)) == before + 1


async def test_the_origin_behind_a_tunnel_is_verified_not_the_proxy(
    proxy: ForwardProxy, https: str
) -> None:
    # the system's CA bundle does not know the origin's throwaway CA
    async with _client(f"{https}/ml/ats/predict", proxy=proxy.url) as client:
        with pytest.raises(EndpointTLSError, match="not trusted"):
            await client.call("ats", "m1", BODY)


@dataclass
class Scripted:
    """A scripted proxy: the head of every request it got, and what it answers."""

    answer: bytes
    heads: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def scripted_proxy(answer: bytes) -> AsyncIterator[tuple[str, Scripted]]:
    """A proxy on 127.0.0.1 that records each request's head and answers ``answer``."""
    script = Scripted(answer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        script.heads.append(head)
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(script.answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", script
    finally:
        server.close()
        await server.wait_closed()


ANSWER = b'HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{"prediction": 2}'


async def test_through_a_proxy_the_request_line_names_the_whole_url_and_the_proxy_user() -> None:
    async with scripted_proxy(ANSWER) as (proxy_url, script):
        proxy = proxy_url.replace("http://", "http://user:p%40ss@")
        async with _client("http://models.example:8080/ml/ats?k=v", proxy=proxy) as client:
            result = await client.call("ats", "m1", BODY)
    assert result.value == 2
    (head,) = script.heads
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST http://models.example:8080/ml/ats?k=v HTTP/1.1"
    assert b"Host: models.example:8080" in lines
    credentials = base64.b64encode(b"user:p@ss")
    assert b"Proxy-Authorization: Basic " + credentials in lines


async def test_a_tunnel_the_proxy_refuses_is_a_connection_error_naming_its_status() -> None:
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with scripted_proxy(refusal) as (proxy_url, script):
        client = _client("https://models.example/ml/ats", proxy=proxy_url)
        async with client:
            with pytest.raises(EndpointConnectionError, match="refused the tunnel: HTTP 407"):
                await client.call("ats", "m1", BODY)
    (head,) = script.heads
    assert head == b"CONNECT models.example:443 HTTP/1.1\r\nHost: models.example:443\r\n\r\n"


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


def _partner(tmp_path: Path, base_url: str) -> Path:
    return write_partner(tmp_path / "partner.yaml", default_document(base_url))


async def test_the_environments_http_proxy_carries_the_calls(
    proxy: ForwardProxy, bundled: BundledServer, tmp_path: Path
) -> None:
    config = load_config(_partner(tmp_path, bundled.base_url), environ={"HTTP_PROXY": proxy.url})
    async with client_for(config) as client:
        result = await client.call("ats", "m1", BODY)
    assert isinstance(result.value, float)
    port = bundled.base_url.rsplit(":", 1)[1]
    assert await proxy.wait_for(f"POST 127.0.0.1:{port}/ml/ats/predict")


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", ".0.0.1", "localhost,127.0.0.1", "*"])
async def test_no_proxy_sends_the_calls_direct(
    bundled: BundledServer, tmp_path: Path, no_proxy: str
) -> None:
    with _closed_port() as port:
        environ = {"http_proxy": f"http://127.0.0.1:{port}", "no_proxy": no_proxy}
    config = load_config(_partner(tmp_path, bundled.base_url), environ=environ)
    async with client_for(config) as client:  # through the proxy, the call would be refused
        result = await client.call("ats", "m1", BODY)
    assert isinstance(result.value, float)


async def test_a_proxy_that_is_down_fails_the_call(bundled: BundledServer, tmp_path: Path) -> None:
    # the same as above without NO_PROXY: the proxy is really used
    with _closed_port() as port:
        environ = {"http_proxy": f"http://127.0.0.1:{port}"}
    config = load_config(_partner(tmp_path, bundled.base_url), environ=environ)
    async with client_for(config) as client:
        with pytest.raises(EndpointConnectionError, match="ConnectionRefusedError"):
            await client.call("ats", "m1", BODY)
