"""The HTTP/1.1 transport of model calls: keep-alive connection pools and pre-encoded requests.

Our own rather than a library client because the client's CPU per request decides a run's
speed, and this costs a fraction of theirs (``docs/architecture.md``, "The HTTP transport is
our own"; ``make bench-transport`` re-checks it): the request line and the fixed headers of a
URL are encoded once (:class:`Route`), a request is one ``transport.write``, answers are parsed
by httptools (llhttp, the parser of uvicorn), one timer per request covers connect, send and
receive, and idle connections are reused per origin.

What it does: ``http`` and ``https`` (verified against the system's CA bundle or a route's own
:class:`Tls`, with a client certificate for mutual TLS), an HTTP proxy (absolute-form requests
for ``http``, a ``CONNECT`` tunnel for ``https``), ``Content-Length``, chunked and
close-delimited answers, keep-alive as the answer asks, a body cap (the first ``max_body + 1``
bytes are kept and the connection dropped), a connect timeout and a total timeout per request.
What it does not: redirects (a 3xx is returned with its ``Location``), cookies, compression (no
``Accept-Encoding`` is sent), HTTP/2. Errors are the builtin ones: :class:`TimeoutError`
(connect or total timeout), :class:`ssl.SSLError` (a certificate not trusted or for another
name, ours refused) and other :class:`OSError`: :class:`ConnectionError` (refused, reset,
closed early, an answer that is not HTTP, a tunnel the proxy refused), name resolution errors.

A proxy and TLS cost nothing per request: they decide how a connection is opened and how a
route's head is encoded, both once; a request then takes the same path with or without them.

Connections, their pools and the parsing of answers are in
:mod:`~offerflow.pipeline.endpoints.connections`.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

from offerflow.errors import redact_url
from offerflow.pipeline.endpoints.connections import Origin, Response, Tunnel

__all__ = ["HttpClient", "Response", "Route", "Tls", "header_lines", "header_value"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 token characters: what a header name may hold
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class Tls:
    """How an ``https`` origin is trusted, and the client certificate shown to it, if any."""

    #: the CA certificates (PEM) trusted instead of the system's bundle; None: the system's
    ca_file: Path | None = None
    #: our certificate (PEM) for a server that requires one (mutual TLS), and its key
    cert_file: Path | None = None
    #: None when the certificate file holds the key too
    key_file: Path | None = None


def header_value(text: str) -> bytes:
    """``text`` as a header value: percent-encoded when it holds a control character (CR, LF).

    Member ids come from the partner's file and may hold anything; a line break in a header
    would let one end the request's head early.
    """
    if text.isprintable():
        return text.encode()
    return quote(text, safe="").encode()


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Encoded ``Name: value`` lines, each ended by CRLF; refuses a name that is not a token."""
    lines = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"not a valid HTTP header name: {name!r}")
        lines.append(name.encode() + b": " + header_value(value) + b"\r\n")
    return b"".join(lines)


class HttpClient:
    """Connection pools per origin, and the :class:`Route` of each URL called."""

    def __init__(self, *, connect_timeout_s: float = 5.0, max_body: int = 1 << 20) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_body = max_body
        self._origins: dict[tuple[str, str, int, Tls | None, str | None], Origin] = {}
        self._contexts: dict[Tls, ssl.SSLContext] = {}

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def route(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: bytes = b"",
        tls: Tls | None = None,
        proxy: str | None = None,
    ) -> Route:
        """The requests of one method to one URL; ``headers`` are :func:`header_lines`.

        ``tls`` is how an ``https`` URL is trusted (None: the system's CA bundle); ``proxy``
        (``http://[user:password@]host:port``) is the HTTP proxy to go through, None: direct.
        """
        if method not in ("GET", "POST"):
            raise ValueError(f"only GET and POST are sent, not {method!r}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)}")
        port = parts.port or _DEFAULT_PORTS[scheme]
        if scheme == "http":
            tls = None
        elif tls is None:
            tls = _SYSTEM_TLS
        via = None if proxy is None else _Proxy.of(proxy)
        bracketed = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        host = bracketed if parts.port is None else f"{bracketed}:{port}"
        key = (scheme, parts.hostname, port, tls, proxy)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = self._origin(parts.hostname, bracketed, port, tls, via)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if via is not None and tls is None:
            # through a proxy, plain http names the whole URL (RFC 9112 §3.2.2, absolute-form)
            target = f"{scheme}://{host}{target}"
            headers = via.authorization + headers
        head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode() + headers
        return Route(redact_url(url), head, origin)

    async def get(
        self,
        url: str,
        *,
        timeout_s: float,
        headers: bytes = b"",
        tls: Tls | None = None,
        proxy: str | None = None,
    ) -> Response:
        """GET ``url`` once."""
        route = self.route(url, method="GET", headers=headers, tls=tls, proxy=proxy)
        return await route.send(b"", timeout_s=timeout_s)

    def close(self) -> None:
        """Close every connection; the client can still be used (it reconnects)."""
        for origin in self._origins.values():
            origin.close()

    def _origin(
        self, hostname: str, bracketed: str, port: int, tls: Tls | None, via: _Proxy | None
    ) -> Origin:
        """The pool of connections a new route's requests go out on (``bracketed``: the
        hostname as a URL writes it, an IPv6 address in brackets)."""
        context = None if tls is None else self._ssl_context(tls)
        if via is None:
            return Origin(hostname, port, context, self, has_client_cert=_shows_cert(tls))
        if context is None:  # plain http through the proxy: connections to the proxy itself
            return Origin(via.host, via.port, None, self)
        # a tunnel's target always names its port (RFC 9110 §9.3.6)
        authority = f"{bracketed}:{port}"
        connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n".encode()
        return Tunnel(
            via.host,
            via.port,
            context,
            self,
            has_client_cert=_shows_cert(tls),
            target=hostname,
            connect=connect + via.authorization + b"\r\n",
        )

    def _ssl_context(self, tls: Tls) -> ssl.SSLContext:
        """One context per way of trusting: it holds the CAs loaded, reused by every origin."""
        context = self._contexts.get(tls)
        if context is None:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.cert_file is not None:
                context.load_cert_chain(tls.cert_file, tls.key_file)
            self._contexts[tls] = context
        return context


_SYSTEM_TLS = Tls()


def _shows_cert(tls: Tls | None) -> bool:
    return tls is not None and tls.cert_file is not None


@dataclass(frozen=True, slots=True)
class _Proxy:
    """An HTTP proxy: where it is, and the ``Proxy-Authorization`` line its URL's user asks."""

    host: str
    port: int
    authorization: bytes = field(repr=False)

    @classmethod
    def of(cls, url: str) -> _Proxy:
        """The proxy at ``url``: ``http://[user:password@]host[:port]`` (port 80 by default)."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ValueError(f"not an http:// proxy: {redact_url(url)}")
        authorization = b""
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            credentials = base64.b64encode(user.encode())
            authorization = b"Proxy-Authorization: Basic " + credentials + b"\r\n"
        return cls(parts.hostname, parts.port or _DEFAULT_PORTS["http"], authorization)


@dataclass(frozen=True, slots=True)
class Route:
    """One method and URL with its fixed headers, encoded once."""

    #: the URL as it may be shown (:func:`~offerflow.errors.redact_url`): no query, no password
    url: str
    #: the request line, Host and the fixed headers, each line ended by CRLF (secrets among them)
    head: bytes = field(repr=False)
    origin: Origin = field(repr=False)

    async def send(self, body: bytes, *, timeout_s: float, headers: bytes = b"") -> Response:
        """Send one request (``headers``: more :func:`header_lines`); wait for its answer.

        Raises TimeoutError when no whole answer arrives within ``timeout_s`` (connecting
        included) and ConnectionError when the connection fails or the answer is not HTTP.
        """
        request = b"%b%bContent-Length: %d\r\n\r\n%b" % (self.head, headers, len(body), body)
        return await self.origin.exchange(request, timeout_s)
