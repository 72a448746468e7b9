"""The model client: calls with deadlines, retries and validation over pooled connections.

Requests go through :mod:`~offerflow.pipeline.endpoints.transport`; every transport error leaves
this module as an offerflow error. A call retries what was probably not processed or is
transient (connection errors, attempt timeouts, the endpoint's retry statuses: 429 and 5xx by
default), honours ``Retry-After`` (clamped), draws retries from a run-wide :class:`RetryBudget`,
fails fast while the endpoint's :class:`CircuitBreaker` is open, and never outlives the member's
deadline. A TLS failure (a certificate) and a redirect (not followed) are final at once.

Nothing it raises or logs shows a header's value or a URL's query or credentials.
"""

from __future__ import annotations

import math
import random
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import anyio
import orjson
from pydantic import SecretStr

from offerflow.engine import backoff_delay
from offerflow.errors import (
    CallInterrupted,
    CircuitOpenError,
    EndpointConnectionError,
    EndpointError,
    EndpointStatusError,
    EndpointTimeout,
    EndpointTLSError,
    InvalidResponseError,
    redact_url,
)
from offerflow.pipeline.endpoints.attempts import (
    AttemptSink,
    RequestIds,
    log_abandoned,
    log_failed,
)
from offerflow.pipeline.endpoints.codec import Answer, Codec
from offerflow.pipeline.endpoints.retry import CircuitBreaker, RetryBudget, retry_after_s
from offerflow.pipeline.endpoints.transport import HttpClient, Response, Route, Tls, header_lines

__all__ = ["CallResult", "Endpoint", "ModelClient"]

_ACCEPT = (("Accept", "application/json"),)
_JSON_HEADERS = (("Content-Type", "application/json"), *_ACCEPT)
#: the largest body read from an endpoint; anything longer is an invalid response
MAX_BODY = 1 << 20
# an attempt with less time than this left before the member's deadline is not started
_MIN_ATTEMPT_S = 0.01
# TLS errors that say the connection broke, not that a certificate or a setting was refused
_TLS_CONNECTION_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """One endpoint as the client sees it: where, what answer is expected, and its limits.

    Its repr shows the URL redacted and the headers' names only.
    """

    name: str
    url: str
    response_field: str
    answer: Literal["number", "label"] = "number"
    timeout_s: float = 10.0
    retries: int = 2
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    retry_after_max_s: float = 30.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    breaker_failures: int = 20
    breaker_cooldown_s: float = 5.0
    #: how answers are read; None: one member per request, the answer at ``response_field``
    codec: Codec | None = None
    #: extra request headers, e.g. ``Authorization``; their values are secrets, never shown
    headers: Mapping[str, SecretStr] = field(default_factory=dict)
    #: how an https endpoint is trusted (None: the system's CA bundle, no client certificate)
    tls: Tls | None = None
    #: the HTTP proxy its requests go through (``http://host:port``); None: direct
    proxy: str | None = None

    def __repr__(self) -> str:
        proxy = "" if self.proxy is None else f", proxy={redact_url(self.proxy)!r}"
        return (
            f"Endpoint(name={self.name!r}, url={redact_url(self.url)!r}, "
            f"headers={sorted(self.headers)!r}{proxy})"
        )

    def reader(self) -> Codec:
        """The codec that reads this endpoint's answers."""
        return self.codec or Codec("json", {}, self.response_field, self.answer)


class CallResult(NamedTuple):
    """The answers of one call (one per member sent), with its attempts and latency."""

    answers: list[Answer]
    #: the HTTP attempts the call took: 1 plus its retries
    attempts: int
    latency_ms: float
    #: the ``X-Request-ID`` of the attempt that answered
    request_id: str

    @property
    def value(self) -> float | str:
        """The one member's answer of a single-member call."""
        (answer,) = self.answers
        assert not isinstance(answer, ValueError), "a single call raises on an invalid answer"
        return answer


#: waits up to the given seconds; returns True when it was woken because the run is stopping
Wait = Callable[[float], Awaitable[bool]]


class ModelClient:
    """Calls the partner's endpoints over pooled keep-alive connections.

    Every attempt names itself in ``X-Request-ID`` by ``run_id`` (a random one when None), the
    member, the endpoint and its number (see :mod:`~offerflow.pipeline.endpoints.attempts`).
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        run_id: str | None = None,
        connect_timeout_s: float = 5.0,
        attempts: AttemptSink | None = None,
        budget: RetryBudget | None = None,
        stopping: anyio.Event | None = None,
        wait: Wait | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints = {e.name: e for e in endpoints}
        self.budget = budget or RetryBudget()
        self.breakers = {
            e.name: CircuitBreaker(failures=e.breaker_failures, cooldown_s=e.breaker_cooldown_s)
            for e in self.endpoints.values()
        }
        self._connect_timeout_s = connect_timeout_s
        self._attempts = attempts
        self._stopping = stopping
        self._wait = wait or self._wait_unless_stopping
        self._rng = rng or random.Random()
        self._http: HttpClient | None = None
        self._routes: dict[str, Route] = {}
        self._readers = {e.name: e.reader() for e in self.endpoints.values()}
        self.run_id = secrets.token_hex(6) if run_id is None else run_id
        self._ids = {name: RequestIds(self.run_id, name) for name in self.endpoints}

    async def __aenter__(self) -> ModelClient:
        self._http = HttpClient(connect_timeout_s=self._connect_timeout_s, max_body=MAX_BODY)
        for spec in self.endpoints.values():
            fixed = header_lines(_with_headers(_JSON_HEADERS, spec.headers))
            self._routes[spec.name] = self._http.route(
                spec.url, headers=fixed, tls=spec.tls, proxy=spec.proxy
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
            self._routes.clear()

    async def call(
        self,
        endpoint: str,
        member_id: str,
        body: bytes,
        *,
        deadline: float = math.inf,
        members: int = 1,
        batch: Sequence[str] = (),
    ) -> CallResult:
        """POST ``body`` to ``endpoint``; ``deadline`` is a time.monotonic().

        ``body`` carries ``members`` members (``member_id`` is the first, for headers; ``batch``
        may list them all, for the log lines of failed attempts); a single member's unusable
        answer raises InvalidResponseError, a batch gets a ValueError in that member's place.
        """
        spec = self.endpoints[endpoint]
        breaker = self.breakers[endpoint]
        ids = self._ids[endpoint]
        started = time.perf_counter()
        self.budget.record_call()
        attempt = 1
        while True:
            sent: str | None = None  # the attempt's request id, once it is sent
            try:
                if not breaker.allow():
                    where = _where(spec, member_id, attempt)
                    raise CircuitOpenError(f"{breaker.refusal()}: not called", **where)
                timeout = (
                    spec.timeout_s
                    if deadline == math.inf
                    else _timeout(spec, member_id, attempt, deadline, breaker)
                )
                headers, request_id = ids.headers(member_id, attempt, members)
                sent = request_id
                answers = await self._attempt(
                    spec, body, member_id, attempt, timeout, breaker, members, headers, request_id
                )
            except EndpointError as error:
                delay = self._retry_delay(spec, error, attempt, deadline)
                if isinstance(delay, str):
                    log_failed(error, request_id=sent, batch=batch, final=delay)
                    raise
                log_failed(error, request_id=sent, batch=batch, retry_in=delay)
                if await self._wait(delay):
                    interrupted = CallInterrupted(
                        "run stopping: retry abandoned", **_where(spec, member_id, attempt)
                    )
                    log_abandoned(interrupted, batch=batch)
                    raise interrupted from error
                attempt += 1
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            return CallResult(answers, attempt, latency_ms, request_id)

    async def get_json(self, endpoint: str, path: str, *, timeout_s: float = 5.0) -> Any | None:
        """GET a JSON document at ``path`` of an endpoint's origin (e.g. its OpenAPI
        description) as the endpoint is called: with its headers, TLS and proxy.

        Returns None when there is none (4xx). Raises EndpointConnectionError when the server
        cannot be reached or answers 5xx or a redirect, EndpointTLSError on a TLS failure.
        """
        if self._http is None:
            raise RuntimeError("ModelClient is used outside 'async with'")
        spec = self.endpoints[endpoint]
        parts = urlsplit(spec.url)
        url = f"{parts.scheme}://{parts.netloc}{path}"
        where: dict[str, Any] = {"endpoint": endpoint, "url": url}
        headers = header_lines(_with_headers(_ACCEPT, spec.headers))
        try:
            answer = await self._http.get(
                url, timeout_s=timeout_s, headers=headers, tls=spec.tls, proxy=spec.proxy
            )
            if 400 <= answer.status < 500:
                return None
            if answer.status != 200:
                raise EndpointConnectionError(_status_problem(answer), **where)
            return orjson.loads(answer.body)
        except OSError as exc:  # TimeoutError, ConnectionError, ssl.SSLError
            raise _transport_error(exc, where) from exc
        except ValueError as exc:  # not JSON
            raise EndpointConnectionError(f"{type(exc).__name__}: {exc}", **where) from exc

    def _retry_delay(
        self, spec: Endpoint, error: EndpointError, attempt: int, deadline: float
    ) -> float | str:
        """Seconds to wait before the next attempt, or why this error is final."""
        if isinstance(error, EndpointStatusError):
            if error.status_code not in spec.retry_statuses:
                return "not a retry status"
        elif not isinstance(error, EndpointTimeout | EndpointConnectionError):
            return "not retried"
        if attempt > spec.retries:
            return f"retries exhausted ({spec.retries})"
        delay = backoff_delay(
            attempt, spec.backoff_initial_s, spec.backoff_max_s, self._rng.uniform
        )
        asked = getattr(error, "retry_after_s", None)
        if asked is not None:
            delay = min(asked, spec.retry_after_max_s)
        if time.monotonic() + delay + _MIN_ATTEMPT_S >= deadline:
            # the next attempt could not finish before the member's deadline
            return "the member's deadline is too near for another attempt"
        if not self.budget.try_spend():
            return "the run's retry budget is spent"
        return delay

    async def _attempt(
        self,
        spec: Endpoint,
        body: bytes,
        member_id: str,
        attempt: int,
        timeout_s: float,
        breaker: CircuitBreaker,
        members: int,
        headers: bytes,
        request_id: str,
    ) -> list[Answer]:
        """Send one attempt with its ``headers`` (:class:`RequestIds`) and record it."""
        route = self._routes.get(spec.name)
        if route is None:
            raise RuntimeError("ModelClient is used outside 'async with'")
        started_at = time.time()
        t0 = time.perf_counter()
        status: int | None = None
        error: EndpointError | None = None
        try:
            answer: Response = await route.send(body, timeout_s=timeout_s, headers=headers)
            status = answer.status
            if status != 200:
                raise EndpointStatusError(
                    _status_problem(answer),
                    status_code=status,
                    retry_after_s=retry_after_s(answer.retry_after),
                    **_where(spec, member_id, attempt),
                )
            return self._answers(spec, answer.body, member_id, attempt, members)
        except EndpointError as exc:
            error = exc
            raise
        except OSError as exc:  # TimeoutError, ConnectionError, ssl.SSLError, socket errors
            error = _transport_error(exc, _where(spec, member_id, attempt))
            raise error from exc
        finally:
            _judge(breaker, spec, status, error)
            if self._attempts is not None:
                self._attempts.add(
                    member_id=member_id,
                    members=members,
                    endpoint=spec.name,
                    attempt=attempt,
                    request_id=request_id,
                    status=status,
                    started_at=started_at,
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )

    def _answers(
        self, spec: Endpoint, payload: bytes, member_id: str, attempt: int, members: int
    ) -> list[Answer]:
        """The answers in a body: JSON, within the size cap, one per member."""
        if len(payload) > MAX_BODY:
            raise _invalid(f"body larger than {MAX_BODY} bytes", spec, member_id, attempt)
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            problem = f"body is not JSON: {payload[:200]!r}"
            raise _invalid(problem, spec, member_id, attempt) from exc
        try:
            answers = self._readers[spec.name].read(document, members)
        except ValueError as exc:
            raise _invalid(str(exc), spec, member_id, attempt) from exc
        if members == 1 and isinstance(answers[0], ValueError):
            raise _invalid(str(answers[0]), spec, member_id, attempt) from answers[0]
        return answers

    async def _wait_unless_stopping(self, delay: float) -> bool:
        if self._stopping is None:
            await anyio.sleep(delay)
            return False
        with anyio.move_on_after(delay):
            await self._stopping.wait()
        return self._stopping.is_set()


def _timeout(
    spec: Endpoint, member_id: str, attempt: int, deadline: float, breaker: CircuitBreaker
) -> float:
    """The time an attempt has: the endpoint's timeout, cut to what is left before the member's
    deadline; EndpointTimeout, unsent, when too little is left."""
    left = deadline - time.monotonic()
    if left < _MIN_ATTEMPT_S:
        breaker.release()
        raise EndpointTimeout("member deadline passed", **_where(spec, member_id, attempt))
    return min(spec.timeout_s, left)


def _judge(
    breaker: CircuitBreaker, spec: Endpoint, status: int | None, error: EndpointError | None
) -> None:
    """Tell the breaker what an attempt says of the endpoint's health."""
    if status == 200 and error is None:
        breaker.record_success()  # the common case first: no questions about failures
        return
    if isinstance(error, EndpointTimeout | EndpointConnectionError) or (
        status is not None and status in spec.retry_statuses
    ):
        breaker.record_failure("" if error is None else error.reason)
    elif status is not None:
        breaker.record_success()  # it answered, even if the answer was bad: it is up
    else:
        breaker.release()


def _with_headers(
    defaults: Iterable[tuple[str, str]], configured: Mapping[str, SecretStr]
) -> list[tuple[str, str]]:
    """The default headers a configured one of the same name does not replace, then those."""
    replaced = {name.lower() for name in configured}
    kept = [(name, value) for name, value in defaults if name.lower() not in replaced]
    return kept + [(name, value.get_secret_value()) for name, value in configured.items()]


def _status_problem(answer: Response) -> str:
    """What an answer other than 200 says: its status, and where a redirect points."""
    if 300 <= answer.status < 400:
        to = "no Location" if answer.location is None else f"to {redact_url(answer.location)}"
        return f"HTTP {answer.status} redirect {to}: redirects are not followed"
    return f"HTTP {answer.status}: {answer.body[:200]!r}"


def _transport_error(exc: OSError, where: Mapping[str, Any]) -> EndpointError:
    """The offerflow error of a transport's: a timeout, a TLS failure, a connection error."""
    if isinstance(exc, TimeoutError):
        return EndpointTimeout(str(exc), **where)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return EndpointTLSError(
            f"TLS: the server's certificate is not trusted: {exc.verify_message} "
            "(ca_file sets the CAs trusted)",
            **where,
        )
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, _TLS_CONNECTION_ERRORS):
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        return EndpointTLSError(f"TLS failed: {reason} (see ca_file, cert_file)", **where)
    return EndpointConnectionError(f"{type(exc).__name__}: {exc}", **where)


def _where(spec: Endpoint, member_id: str, attempt: int) -> dict[str, Any]:
    """Which call an error belongs to, as the error's keyword arguments (made only for one)."""
    return {"endpoint": spec.name, "url": spec.url, "member_id": member_id, "attempt": attempt}


def _invalid(message: str, spec: Endpoint, member_id: str, attempt: int) -> InvalidResponseError:
    return InvalidResponseError(message, **_where(spec, member_id, attempt))
