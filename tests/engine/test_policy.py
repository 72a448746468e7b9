"""Policy: retries only what is retryable, with capped full-jitter backoff and timeouts."""

from __future__ import annotations

import random
import threading
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offerflow.engine import Failure, Policy, Workflow, backoff_delay
from offerflow.errors import EndpointTimeout, OutputError, TaskFailedError, WorldError

from .recorder import Recorder


class Sleeps:
    """A ``sleep`` seam that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def upper_bound(low: float, high: float) -> float:
    """A ``uniform`` seam that always draws the largest delay allowed."""
    return high


class Flaky:
    """A stream function that raises ``error`` on its first ``times`` calls, then echoes."""

    def __init__(self, times: int, error: Exception) -> None:
        self.times = times
        self.error = error
        self.calls = 0

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return x


async def run_one_item(fn: Any, policy: Policy, hooks: list[Any] | None = None) -> Any:
    wf = Workflow("w").step("one", lambda: ["x"]).stream("work", fn, after="one", policy=policy)
    result = await wf.run(hooks=hooks or [])
    return result.results["work"][0]


@pytest.mark.parametrize(
    "fields",
    [
        {"retries": -1},
        {"backoff_initial": -0.1},
        {"backoff_max": -1.0},
        {"backoff_max": float("inf")},
        {"attempt_timeout": 0},
        {"item_timeout": -5},
        {"item_timeout": float("nan")},
    ],
)
def test_invalid_policy_values_are_refused_naming_the_field(fields: dict[str, Any]) -> None:
    (name,) = fields
    with pytest.raises(ValueError, match=name):
        Policy(**fields)


def test_by_default_only_world_errors_are_retried() -> None:
    retry_on = Policy().retry_on

    assert retry_on(EndpointTimeout("slow", endpoint="ats"))
    assert retry_on(OutputError("disk full", path="out"))
    assert not retry_on(ValueError("bug"))
    assert not retry_on(TimeoutError())


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = Policy(backoff_initial=0.1, backoff_max=0.5, uniform=upper_bound)

    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize(
    ("initial", "maximum", "caps"),
    [
        (0.1, 0.5, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]),
        (1.0, 100.0, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        (0.25, 0.25, [0.25, 0.25, 0.25, 0.25, 0.25, 0.25]),
    ],
    ids=["capped", "doubling", "flat"],
)
def test_backoff_draws_uniformly_from_zero_to_the_capped_doubling(
    seed: int, initial: float, maximum: float, caps: list[float]
) -> None:
    policy = Policy(
        backoff_initial=initial, backoff_max=maximum, uniform=random.Random(seed).uniform
    )
    expected = random.Random(seed)

    assert [policy.delay(n) for n in range(1, len(caps) + 1)] == [
        expected.uniform(0.0, cap) for cap in caps
    ]


@pytest.mark.parametrize("attempt", [1024, 1025, 1100, 10**6])
def test_backoff_after_a_huge_attempt_number_is_a_draw_under_the_cap(attempt: int) -> None:
    # 2.0 ** 1024 overflows a float: the cap must apply without computing it
    delay = backoff_delay(attempt, 0.1, 10.0, random.Random(3).uniform)

    assert delay == random.Random(3).uniform(0.0, 10.0)


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    initial=st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=100)),
    cap=st.floats(min_value=0, max_value=1000),
)
def test_the_largest_backoff_starts_at_the_initial_delay_and_doubles_up_to_the_cap(
    attempt: int, initial: float, cap: float
) -> None:
    policy = Policy(backoff_initial=initial, backoff_max=cap, uniform=upper_bound)

    assert policy.delay(1) == min(cap, initial)
    assert policy.delay(attempt + 1) == min(cap, 2 * policy.delay(attempt))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "retries", "attempts"),
    [
        (WorldError("flaky"), 3, 4),
        (WorldError("flaky"), 0, 1),
        (ValueError("bug"), 3, 1),
    ],
    ids=["retryable", "no-retries", "not-retryable"],
)
async def test_an_item_is_attempted_once_plus_retries_only_for_retryable_errors(
    error: Exception, retries: int, attempts: int, recorder: Recorder
) -> None:
    fn = Flaky(100, error)
    sleeps = Sleeps()
    policy = Policy(retries=retries, sleep=sleeps, uniform=upper_bound)

    failure = await run_one_item(fn, policy, [recorder])

    assert isinstance(failure, Failure)
    assert (failure.error, failure.attempts) == (error, attempts)
    assert fn.calls == attempts
    retried = recorder.named("retry")
    assert [event["attempt"] for event in retried] == list(range(1, attempts))
    assert [event["delay"] for event in retried] == sleeps.delays
    assert all(event["error"] is error and event["key"] == 0 for event in retried)


@pytest.mark.anyio
async def test_an_item_that_succeeds_on_a_retry_gives_its_value() -> None:
    sleeps = Sleeps()
    policy = Policy(retries=3, backoff_initial=1.0, sleep=sleeps, uniform=upper_bound)

    value = await run_one_item(Flaky(2, WorldError("flaky")), policy)

    assert value == "x"
    assert sleeps.delays == [1.0, 2.0]


@pytest.mark.anyio
async def test_retry_on_decides_what_is_retried() -> None:
    policy = Policy(retries=1, retry_on=lambda exc: isinstance(exc, KeyError), sleep=Sleeps())

    assert await run_one_item(Flaky(1, KeyError("k")), policy) == "x"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "policy",
    [Policy(attempt_timeout=0.01), Policy(item_timeout=0.01)],
    ids=["attempt-timeout", "item-timeout"],
)
async def test_a_timeout_turns_a_hang_into_a_timeout_failure(policy: Policy) -> None:
    async def hang(x: Any) -> Any:
        await anyio.Event().wait()

    with anyio.fail_after(5):
        failure = await run_one_item(hang, policy)

    assert isinstance(failure, Failure)
    assert isinstance(failure.error, TimeoutError)
    assert failure.attempts == 1


@pytest.mark.anyio
async def test_the_item_timeout_covers_the_waits_between_attempts() -> None:
    async def wait_forever(delay: float) -> None:
        await anyio.Event().wait()

    policy = Policy(retries=5, item_timeout=0.01, sleep=wait_forever)

    with anyio.fail_after(5):
        failure = await run_one_item(Flaky(100, WorldError("flaky")), policy)

    assert isinstance(failure.error, TimeoutError)
    assert failure.attempts == 1


@pytest.mark.anyio
async def test_an_attempt_that_timed_out_is_retried_when_timeouts_are_retryable() -> None:
    calls = 0

    async def hang_once(x: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.Event().wait()
        return x

    policy = Policy(
        retries=1,
        attempt_timeout=0.01,
        retry_on=lambda exc: isinstance(exc, TimeoutError),
        sleep=Sleeps(),
    )

    with anyio.fail_after(5):
        assert await run_one_item(hang_once, policy) == "x"
    assert calls == 2


class FlakyLoad:
    """An async batch function that raises a WorldError on its first ``times`` calls."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise WorldError("flaky")
        return "loaded"


@pytest.mark.anyio
async def test_a_batch_task_is_retried_by_its_policy() -> None:
    load = FlakyLoad(2)
    wf = Workflow("w").step("load", load, policy=Policy(retries=2, sleep=Sleeps()))

    result = await wf.run()

    assert result.results["load"] == "loaded"
    assert load.calls == 3


@pytest.mark.anyio
async def test_a_batch_task_failing_every_attempt_fails_the_run() -> None:
    load = FlakyLoad(2)
    wf = Workflow("w").step("load", load, policy=Policy(retries=1, sleep=Sleeps()))

    with pytest.raises(TaskFailedError, match="'load'"):
        await wf.run()
    assert load.calls == 2


@pytest.mark.anyio
async def test_a_sync_batch_function_overrunning_its_attempt_timeout_fails_the_task() -> None:
    released = threading.Event()

    def stuck() -> None:
        released.wait(5)

    wf = Workflow("w").step("stuck", stuck, policy=Policy(attempt_timeout=0.01))

    try:
        with anyio.fail_after(5), pytest.raises(TaskFailedError) as info:
            await wf.run()
    finally:
        released.set()  # the abandoned worker thread can now end
    assert isinstance(info.value.cause, TimeoutError)
