"""The model client: one aiohttp session per run; calls with deadlines, retries and validation.

This is the only module that imports aiohttp; every aiohttp error leaves it as an offerflow error.
A call retries what was probably not processed or is transient (connection errors, attempt
timeouts, the endpoint's retry statuses: 429 and 5xx by default), honours ``Retry-After``
(clamped), draws retries from a run-wide :class:`RetryBudget`, fails fast while the endpoint's
:class:`CircuitBreaker` is open, and never outlives the member's deadline.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import aiohttp
import anyio
import orjson

from offerflow.errors import (
    CallInterrupted,
    CircuitOpenError,
    EndpointConnectionError,
    EndpointError,
    EndpointStatusError,
    EndpointTimeout,
    InvalidResponseError,
)
from offerflow.pipeline.retry import CircuitBreaker, RetryBudget, full_jitter, retry_after_s

__all__ = ["AttemptSink", "CallResult", "Endpoint", "ModelClient"]

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
#: the largest body read from an endpoint; anything longer is an invalid response
MAX_BODY = 1 << 20
# an attempt with less time than this left before the member's deadline is not started
_MIN_ATTEMPT_S = 0.01


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint as the client sees it: where, what answer is expected, and its limits."""

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


@dataclass(frozen=True, slots=True)
class CallResult:
    """The validated answer of one call, with how many attempts and how long it took."""

    value: float | str
    attempts: int
    latency_ms: float


class AttemptSink(Protocol):
    """Receives one record per HTTP attempt (the requests table)."""

    def add(
        self,
        *,
        member_id: str,
        endpoint: str,
        attempt: int,
        status: int | None,
        started_at: float,
        latency_ms: float,
        error: str | None,
    ) -> None: ...


#: waits up to the given seconds; returns True when it was woken because the run is stopping
Wait = Callable[[float], Awaitable[bool]]


class ModelClient:
    """Calls the partner's endpoints over one pooled keep-alive session."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        connections: int = 100,
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
        self._connections = connections
        self._connect_timeout_s = connect_timeout_s
        self._attempts = attempts
        self._stopping = stopping
        self._wait = wait or self._wait_unless_stopping
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._timeouts = {e.name: self._timeout(e.timeout_s) for e in self.endpoints.values()}

    async def __aenter__(self) -> ModelClient:
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=_JSON_HEADERS, skip_auto_headers=("User-Agent",)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, endpoint: str, member_id: str, body: bytes, *, deadline: float = math.inf
    ) -> CallResult:
        """POST ``body`` to ``endpoint`` for one member; ``deadline`` is a time.monotonic()."""
        spec = self.endpoints[endpoint]
        breaker = self.breakers[endpoint]
        started = time.perf_counter()
        self.budget.record_call()
        attempt = 1
        while True:
            where = _Where(spec.name, spec.url, member_id, attempt)
            if not breaker.allow():
                raise CircuitOpenError("circuit breaker open: not called", **where.kwargs())
            try:
                value = await self._attempt(spec, body, where, deadline, breaker)
            except EndpointError as error:
                delay = self._retry_delay(spec, error, attempt, deadline)
                if delay is None:
                    raise
                log.debug("retrying %s for %s in %.3fs: %s", endpoint, member_id, delay, error)
                if await self._wait(delay):
                    raise CallInterrupted(
                        "run stopping: retry abandoned", **where.kwargs()
                    ) from error
                attempt += 1
                continue
            return CallResult(value, attempt, (time.perf_counter() - started) * 1000)

    def _retry_delay(
        self, spec: Endpoint, error: EndpointError, attempt: int, deadline: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when this error is final."""
        if isinstance(error, EndpointStatusError):
            if error.status_code not in spec.retry_statuses:
                return None
        elif not isinstance(error, EndpointTimeout | EndpointConnectionError):
            return None
        if attempt > spec.retries:
            return None
        delay = full_jitter(attempt, spec.backoff_initial_s, spec.backoff_max_s, self._rng)
        asked = getattr(error, "retry_after_s", None)
        if asked is not None:
            delay = min(asked, spec.retry_after_max_s)
        if time.monotonic() + delay + _MIN_ATTEMPT_S >= deadline:
            return None  # the next attempt could not finish before the member's deadline
        if not self.budget.try_spend():
            log.debug("retry budget spent: %s fails after attempt %d", spec.name, attempt)
            return None
        return delay

    async def _attempt(
        self,
        spec: Endpoint,
        body: bytes,
        where: _Where,
        deadline: float,
        breaker: CircuitBreaker,
    ) -> float | str:
        session = self._session
        if session is None:
            raise RuntimeError("ModelClient is used outside 'async with'")
        timeout = self._timeouts[spec.name]
        if deadline != math.inf:
            left = deadline - time.monotonic()
            if left < _MIN_ATTEMPT_S:
                breaker.release()
                raise EndpointTimeout("member deadline passed", **where.kwargs())
            if left < spec.timeout_s:
                timeout = self._timeout(left)
        started_at = time.time()
        t0 = time.perf_counter()
        status: int | None = None
        error: EndpointError | None = None
        headers = {"X-Offerflow-Member": where.member_id, "X-Offerflow-Attempt": str(where.attempt)}
        try:
            async with session.post(
                spec.url, data=body, headers=headers, timeout=timeout
            ) as answer:
                status = answer.status
                payload = await _read_capped(answer)
                if status != 200:
                    raise EndpointStatusError(
                        f"HTTP {status}: {payload[:200]!r}",
                        status_code=status,
                        retry_after_s=retry_after_s(answer.headers.get("Retry-After")),
                        **where.kwargs(),
                    )
            return _validate(spec, payload, where)
        except EndpointError as exc:
            error = exc
            raise
        except TimeoutError as exc:
            error = EndpointTimeout(f"no answer within {timeout.total:.3g}s", **where.kwargs())
            raise error from exc
        except aiohttp.ClientError as exc:
            error = EndpointConnectionError(f"{type(exc).__name__}: {exc}", **where.kwargs())
            raise error from exc
        finally:
            _judge(breaker, spec, status, error)
            if self._attempts is not None:
                self._attempts.add(
                    member_id=where.member_id,
                    endpoint=spec.name,
                    attempt=where.attempt,
                    status=status,
                    started_at=started_at,
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=min(total, self._connect_timeout_s))

    async def _wait_unless_stopping(self, delay: float) -> bool:
        if self._stopping is None:
            await anyio.sleep(delay)
            return False
        with anyio.move_on_after(delay):
            await self._stopping.wait()
        return self._stopping.is_set()


async def _read_capped(answer: aiohttp.ClientResponse) -> bytes:
    """The body, or its first MAX_BODY + 1 bytes when it is longer (never more in memory)."""
    length = answer.content_length
    if length is not None and length <= MAX_BODY:
        return await answer.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            break
    return b"".join(chunks)


def _judge(
    breaker: CircuitBreaker, spec: Endpoint, status: int | None, error: EndpointError | None
) -> None:
    """Tell the breaker what an attempt says of the endpoint's health."""
    if isinstance(error, EndpointTimeout | EndpointConnectionError) or (
        status is not None and status in spec.retry_statuses
    ):
        breaker.record_failure()
    elif status is not None:
        breaker.record_success()  # it answered, even if the answer was bad: it is up
    else:
        breaker.release()


@dataclass(frozen=True, slots=True)
class _Where:
    """Which call an error belongs to."""

    endpoint: str
    url: str
    member_id: str
    attempt: int

    def kwargs(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "url": self.url,
            "member_id": self.member_id,
            "attempt": self.attempt,
        }

    def invalid(self, message: str) -> InvalidResponseError:
        return InvalidResponseError(message, **self.kwargs())


def _validate(spec: Endpoint, payload: bytes, where: _Where) -> float | str:
    """The expected field of a JSON object body, a finite number or a label, or an error."""
    if len(payload) > MAX_BODY:
        raise where.invalid(f"body larger than {MAX_BODY} bytes")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise where.invalid(f"body is not JSON: {payload[:200]!r}") from exc
    if not isinstance(document, dict) or spec.response_field not in document:
        raise where.invalid(f"expected field {spec.response_field!r} missing: {payload[:200]!r}")
    value = document[spec.response_field]
    if spec.answer == "label":
        if not isinstance(value, str) or not value:
            raise where.invalid(f"{spec.response_field!r} is not a label: {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise where.invalid(f"{spec.response_field!r} is not a finite number: {value!r}")
    return float(value)
