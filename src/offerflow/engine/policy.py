"""Per-task retry and timeout policy, and the loop that applies it to one item."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from offerflow.errors import WorldError

T = TypeVar("T")

#: ``(attempt, error, delay)``: called before waiting to retry after ``attempt`` failed.
RetryCallback = Callable[[int, BaseException, float], None]

# 2.0 ** 1023 is the largest power of two a float holds; past it the cap applies anyway.
_MAX_EXPONENT = 1023


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Return the capped full-jitter wait after failed attempt ``attempt`` (counted from 1).

    That is ``uniform(0, min(maximum, initial * 2 ** (attempt - 1)))`` seconds; ``uniform`` is
    ``random.uniform`` or the bound method of a seeded ``random.Random``.
    """
    exponent = min(attempt - 1, _MAX_EXPONENT)
    return uniform(0.0, min(maximum, initial * 2.0**exponent))


def never(exc: BaseException) -> bool:
    """Return False: the default ``Policy.fatal``, no item error fails its task."""
    return False


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is worth retrying: the world failed (a :class:`WorldError`)."""
    return isinstance(exc, WorldError)


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-task retry/timeout policy: capped, fully jittered exponential backoff.

    ``retries`` counts extra attempts after the first, made only when ``retry_on(error)`` is
    true. The wait after the n-th failed attempt is ``uniform(0, min(backoff_max,
    backoff_initial * 2 ** (n - 1)))`` seconds (:func:`backoff_delay`). ``attempt_timeout``
    cuts each attempt and ``item_timeout`` the whole item including retries and waits; both
    raise ``TimeoutError``.

    An item error for which ``fatal(error)`` is true (after retries) fails the whole task, and
    with it the run, instead of becoming a Failure: for errors no later item can escape, such
    as a sink that cannot write.

    ``sleep`` and ``uniform`` are test seams: inject a recording ``sleep`` and a fixed
    ``uniform`` to check the schedule without waiting. A timeout cannot interrupt a sync
    function while it runs on the event loop (a stream task's sync fn); it applies when the
    function returns control.
    """

    retries: int = 0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    retry_on: Callable[[BaseException], bool] = is_transient
    attempt_timeout: float | None = None
    item_timeout: float | None = None
    fatal: Callable[[BaseException], bool] = never
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"Policy.retries must be >= 0, got {self.retries}")
        for name in ("backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Policy.{name} must be a finite number >= 0 seconds, got {value}")
        for name in ("attempt_timeout", "item_timeout"):
            value = getattr(self, name)
            # `not >` also rejects NaN
            if value is not None and not value > 0:
                raise ValueError(f"Policy.{name} must be > 0 seconds or None, got {value}")

    @property
    def plain(self) -> bool:
        """Whether the policy does nothing: no retries and no timeouts (the fast path)."""
        return self.retries == 0 and self.attempt_timeout is None and self.item_timeout is None

    def delay(self, attempt: int) -> float:
        """Return the jittered wait before retrying after failed attempt number ``attempt``."""
        return backoff_delay(attempt, self.backoff_initial, self.backoff_max, self.uniform)


async def call_with_policy(
    policy: Policy,
    attempt: Callable[[], Awaitable[T]],
    on_retry: RetryCallback,
) -> tuple[T | None, BaseException | None, int]:
    """Run ``attempt`` under ``policy``; return ``(result, error, attempts)``, error None if ok.

    Exceptions become a returned error rather than propagating, so a caller can turn them into
    a Failure; cancellation and other BaseExceptions propagate.
    """
    if policy.item_timeout is None:
        return await _attempts(policy, attempt, on_retry, [0])
    tried = [0]
    # a bare deadline scope: anyio.fail_after costs a few microseconds more per item
    with anyio.CancelScope(deadline=anyio.current_time() + policy.item_timeout):
        return await _attempts(policy, attempt, on_retry, tried)
    # only reached when the scope cancelled the item: its deadline passed
    error = TimeoutError(f"item timed out after {policy.item_timeout} s")
    return None, error, tried[0]


async def _attempts(
    policy: Policy,
    attempt: Callable[[], Awaitable[T]],
    on_retry: RetryCallback,
    tried: list[int],
) -> tuple[T | None, BaseException | None, int]:
    # `tried` is shared with the caller, which needs the count when the item deadline hits
    timeout = policy.attempt_timeout
    while True:
        tried[0] += 1
        try:
            # a cancel scope per attempt costs microseconds: enter one only for a deadline
            if timeout is None:
                return await attempt(), None, tried[0]
            with anyio.CancelScope(deadline=anyio.current_time() + timeout):
                return await attempt(), None, tried[0]
            raise TimeoutError(f"attempt timed out after {timeout} s")
        except Exception as exc:
            if tried[0] > policy.retries or not policy.retry_on(exc):
                return None, exc, tried[0]
            delay = policy.delay(tried[0])
            on_retry(tried[0], exc, delay)
            await policy.sleep(delay)
