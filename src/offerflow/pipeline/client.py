"""The model client: one aiohttp session per run, calls with timeouts, retries and validation.

This is the only module that imports aiohttp; every aiohttp error leaves it as an offerflow error.
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
    EndpointConnectionError,
    EndpointError,
    EndpointStatusError,
    EndpointTimeout,
    InvalidResponseError,
)

__all__ = ["AttemptSink", "CallResult", "Endpoint", "ModelClient", "is_retryable"]

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
_MAX_BODY = 1 << 20


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


def is_retryable(error: BaseException) -> bool:
    """True for failures that are probably transient and unprocessed: worth another attempt."""
    if isinstance(error, EndpointStatusError):
        return error.status_code in _RETRYABLE_STATUS
    return isinstance(error, EndpointTimeout | EndpointConnectionError)


Sleep = Callable[[float], Awaitable[None]]


class ModelClient:
    """Calls the partner's endpoints over one pooled keep-alive session."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        connections: int = 100,
        connect_timeout_s: float = 5.0,
        attempts: AttemptSink | None = None,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints = {e.name: e for e in endpoints}
        self._connections = connections
        self._connect_timeout_s = connect_timeout_s
        self._attempts = attempts
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._timeouts = {
            e.name: aiohttp.ClientTimeout(total=e.timeout_s, sock_connect=connect_timeout_s)
            for e in self.endpoints.values()
        }

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

    async def call(self, endpoint: str, member_id: str, body: bytes) -> CallResult:
        """POST ``body`` to ``endpoint`` for one member, retrying transient failures."""
        spec = self.endpoints[endpoint]
        started = time.perf_counter()
        attempt = 1
        while True:
            try:
                value = await self._attempt(spec, member_id, body, attempt)
            except EndpointError as error:
                if attempt > spec.retries or not is_retryable(error):
                    raise
                cap = min(spec.backoff_max_s, spec.backoff_initial_s * 2 ** (attempt - 1))
                delay = self._rng.uniform(0, cap)
                log.debug("retrying %s for %s in %.3fs: %s", endpoint, member_id, delay, error)
                await self._sleep(delay)
                attempt += 1
                continue
            return CallResult(value, attempt, (time.perf_counter() - started) * 1000)

    async def _attempt(
        self, spec: Endpoint, member_id: str, body: bytes, attempt: int
    ) -> float | str:
        session = self._session
        if session is None:
            raise RuntimeError("ModelClient is used outside 'async with'")
        started_at = time.time()
        t0 = time.perf_counter()
        status: int | None = None
        error: EndpointError | None = None
        where = _Where(spec.name, spec.url, member_id, attempt)
        try:
            async with session.post(
                spec.url, data=body, timeout=self._timeouts[spec.name]
            ) as response:
                status = response.status
                payload = await response.content.read(_MAX_BODY + 1)
            if status != 200:
                raise EndpointStatusError(
                    f"HTTP {status}: {payload[:200]!r}", status_code=status, **where.kwargs()
                )
            return _validate(spec, payload, where)
        except EndpointError as exc:
            error = exc
            raise
        except TimeoutError as exc:
            error = EndpointTimeout(f"no answer within {spec.timeout_s}s", **where.kwargs())
            raise error from exc
        except aiohttp.ClientError as exc:
            error = EndpointConnectionError(f"{type(exc).__name__}: {exc}", **where.kwargs())
            raise error from exc
        finally:
            if self._attempts is not None:
                self._attempts.add(
                    member_id=member_id,
                    endpoint=spec.name,
                    attempt=attempt,
                    status=status,
                    started_at=started_at,
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )


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
    if len(payload) > _MAX_BODY:
        raise where.invalid(f"body larger than {_MAX_BODY} bytes")
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
