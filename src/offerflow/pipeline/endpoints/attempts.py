"""One HTTP attempt of a call: the id it is sent with, its record, and its log line if it failed.

Every attempt carries ``X-Request-ID: RUN:MEMBER:ENDPOINT:ATTEMPT`` (e.g.
``20261203T0457Z-ab12cd:003D2324:ats:2``); an attempt of a batched protocol names the first
member of its body and how many others it carries (``20261203T0457Z-ab12cd:003D2324+49:ats:1``
for 50 members). The run id holds no ``:`` and an endpoint name none either, so the id reads
from both ends whatever a member id holds; a member id with a control character is
percent-encoded, as in every header. The same text is the attempt's ``request_id`` in the
requests table, so that a partner's server log and a run's table meet on it.

A failed attempt is logged once: at WARNING when it will be retried, at ERROR when the call
fails for good with it, and so is a member whose answer in a batch that succeeded is unusable.
Each record names the endpoint, the member, the attempt and its outcome (``HTTP 503``, or the
error's kind: ``EndpointTimeout``, ``CircuitOpenError``, ...) in its message and as fields of
``run.log``; a successful attempt is not logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from offerflow.errors import EndpointError, EndpointStatusError
from offerflow.pipeline.endpoints.transport import header_value

__all__ = [
    "AttemptSink",
    "RequestIds",
    "log_abandoned",
    "log_failed",
    "log_invalid_in_batch",
    "outcome",
]

log = logging.getLogger(__name__)


class AttemptSink(Protocol):
    """Receives one record per HTTP attempt (the requests table)."""

    def add(
        self,
        *,
        member_id: str,
        members: int,
        endpoint: str,
        attempt: int,
        request_id: str,
        status: int | None,
        started_at: float,
        latency_ms: float,
        error: str | None,
    ) -> None: ...


class RequestIds:
    """The headers that name an attempt to one endpoint, the fixed part of them encoded once.

    An attempt then costs one bytes format for its id and one for the header lines.
    """

    __slots__ = ("_batch", "_batch_id", "_one", "_one_id")

    def __init__(self, run_id: str, endpoint: str) -> None:
        # a % of theirs must not read as a format specifier
        run = header_value(run_id).replace(b"%", b"%%")
        name = header_value(endpoint).replace(b"%", b"%%")
        self._one_id = run + b":%b:" + name + b":%d"
        self._batch_id = run + b":%b+%d:" + name + b":%d"
        lines = b"X-Offerflow-Member: %b\r\nX-Offerflow-Attempt: %d\r\nX-Request-ID: %b\r\n"
        self._one = lines
        self._batch = lines + b"X-Offerflow-Members: %d\r\n"

    def headers(self, member_id: str, attempt: int, members: int = 1) -> tuple[bytes, str]:
        """The header lines of an attempt carrying ``members`` members from ``member_id`` on,
        and its request id as sent."""
        member = header_value(member_id)
        if members == 1:
            request_id = self._one_id % (member, attempt)
            return self._one % (member, attempt, request_id), request_id.decode()
        request_id = self._batch_id % (member, members - 1, attempt)
        return self._batch % (member, attempt, request_id, members), request_id.decode()


def outcome(error: EndpointError) -> str:
    """How an attempt ended, as its log record names it: ``HTTP 503``, or the error's kind."""
    if isinstance(error, EndpointStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__


def log_failed(
    error: EndpointError,
    *,
    request_id: str | None,
    batch: Sequence[str],
    retry_in: float | None = None,
    final: str = "",
) -> None:
    """Log a failed attempt: at WARNING with the wait before the next (``retry_in``), else at
    ERROR with why the call ends here (``final``: retries exhausted, not retryable, ...).

    ``request_id`` is None for an attempt that was never sent (the breaker open, the member's
    deadline passed); ``batch`` holds every member of a batched call's body.
    """
    kind = outcome(error)
    who = _members(error, batch)
    if retry_in is not None:
        log.warning(
            "%s attempt %d for %s failed (%s), retrying in %.3f s: %s",
            error.endpoint, error.attempt, who, kind, retry_in, error,
            extra=_fields(error, kind, request_id, batch),
        )  # fmt: skip
    else:
        log.error(
            "%s attempt %d for %s failed (%s) for good, %s: %s",
            error.endpoint, error.attempt, who, kind, final, error,
            extra=_fields(error, kind, request_id, batch),
        )  # fmt: skip


def log_abandoned(error: EndpointError, *, batch: Sequence[str]) -> None:
    """Log a call abandoned in its wait before a retry, because the run is stopping."""
    log.warning(
        "%s call for %s abandoned after attempt %d: %s",
        error.endpoint, _members(error, batch), error.attempt, error.reason,
        extra=_fields(error, outcome(error), None, batch),
    )  # fmt: skip


def log_invalid_in_batch(error: EndpointError, *, request_id: str) -> None:
    """Log a member whose answer in a batch is unusable, though the call succeeded (so the
    client logged nothing): an error, as the member fails."""
    log.error(
        "%s attempt %d for member %s: its answer in the batch is invalid: %s",
        error.endpoint, error.attempt, error.member_id, error.reason,
        extra=_fields(error, outcome(error), request_id, ()),
    )  # fmt: skip


def _members(error: EndpointError, batch: Sequence[str]) -> str:
    if len(batch) > 1:
        return f"{len(batch)} members from {error.member_id}"
    return f"member {error.member_id}"


def _fields(
    error: EndpointError, kind: str, request_id: str | None, batch: Sequence[str]
) -> dict[str, Any]:
    """The record's fields that ``run.log`` writes out (see ``outputs.JsonLines``)."""
    fields: dict[str, Any] = {
        "member_id": error.member_id,
        "endpoint": error.endpoint,
        "attempt": error.attempt,
        "outcome": kind,
    }
    if request_id is not None:
        fields["request_id"] = request_id
    if len(batch) > 1:
        fields["member_ids"] = list(batch)
    return fields
