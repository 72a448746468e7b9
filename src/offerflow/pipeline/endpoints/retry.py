"""How the model client gives up and waits: Retry-After, a retry budget, a breaker.

The backoff between attempts is the engine's :func:`~offerflow.engine.backoff_delay`, one
formula, not a retry library wrapped around every call (``docs/architecture.md``, "Backoff
without a retry library").
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker", "RetryBudget", "retry_after_s"]


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (delta or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(slots=True)
class RetryBudget:
    """Run-wide cap on retries: at most ``ratio`` of first attempts, plus a small ``floor``.

    A sick endpoint then costs at most (1 + ratio) times the calls a healthy one does, instead of
    being multiplied by the attempts of every member.
    """

    ratio: float = 0.2
    floor: int = 20
    calls: int = 0
    retries: int = 0

    def record_call(self) -> None:
        """Count a first attempt."""
        self.calls += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self.retries >= self.floor + self.ratio * self.calls:
            return False
        self.retries += 1
        return True


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after ``failures`` consecutive failed attempts; fails fast while open; probes.

    After ``cooldown_s`` one call is let through as a probe (half-open): its success closes the
    breaker, its failure opens it again for a cooldown twice as long (up to ``max_cooldown_s``).
    It remembers what the last failure was, so that a call it refuses can say why.
    """

    failures: int = 20
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    opened: int = 0
    #: what the last failed call said, e.g. ``ConnectionRefusedError: [Errno 111] ...``
    last_failure: str = ""
    _consecutive: int = 0
    _open_until: float = 0.0
    _cooldown: float = field(default=math.nan)
    _probing: bool = False

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() < self._open_until:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        """A call answered: close the breaker."""
        self._consecutive = 0
        self._probing = False
        self.state = BreakerState.CLOSED
        self._cooldown = math.nan

    def record_failure(self, cause: str = "") -> None:
        """A call failed in a way that says the endpoint is unwell; ``cause`` says how."""
        self._consecutive += 1
        self.last_failure = cause
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            cooldown = self.cooldown_s if math.isnan(self._cooldown) else self._cooldown * 2
            self._open(min(cooldown, self.max_cooldown_s))
        elif self.state is BreakerState.CLOSED and self._consecutive >= self.failures:
            self._open(self.cooldown_s)

    def refusal(self) -> str:
        """Why :meth:`allow` says no: the failures that opened the breaker, and the last one."""
        last = f" (last: {self.last_failure})" if self.last_failure else ""
        opened = f"after {self._consecutive} consecutive failures{last}"
        if self.state is BreakerState.HALF_OPEN:
            return f"circuit half-open, its one probe in flight; opened {opened}"
        return f"circuit open {opened}"

    def release(self) -> None:
        """A call ended with no verdict on the endpoint (e.g. abandoned): free the probe slot."""
        self._probing = False

    def _open(self, cooldown: float) -> None:
        self.state = BreakerState.OPEN
        self.opened += 1
        self._cooldown = cooldown
        self._open_until = self.clock() + cooldown
