"""Batched stream tasks: fn takes a list of items; keys, failures and hooks still go by item."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.engine import Failure, ItemError, MetricsHook, Policy, Workflow
from offerflow.errors import GraphError, TaskFailedError

from .recorder import Recorder

# A linger no test waits out: batches are cut by their size or the end of the stream only.
PATIENT = 60.0
FED_BY = ["result", "stream"]


class Batches:
    """A batched fn that records the batches it gets and returns ``each(value)`` per value."""

    def __init__(self, each: Callable[[Any], Any] = lambda value: value) -> None:
        self.seen: list[list[Any]] = []
        self._each = each

    def __call__(self, values: list[Any]) -> list[Any]:
        self.seen.append(list(values))
        return [self._each(value) for value in values]

    @property
    def sizes(self) -> list[int]:
        """The size of each batch, in the order fn got them."""
        return [len(batch) for batch in self.seen]


def feed(wf: Workflow, count: int, fed_by: str) -> str:
    """Add ``count`` numbers as a step's result, then maybe a stream passing them on.

    Returns the task a batched stream goes after: the step result itself, or the stream.
    """
    wf.step("numbers", lambda: list(range(count)))
    if fed_by == "result":
        return "numbers"
    wf.stream("up", lambda x: x, after="numbers")
    return "up"


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@pytest.mark.anyio
@pytest.mark.parametrize("fed_by", FED_BY)
async def test_a_fast_upstream_fills_batches_and_the_end_of_stream_flushes_the_rest(
    fed_by: str,
) -> None:
    fn = Batches()
    wf = Workflow("w")
    wf.stream("b", fn, after=feed(wf, 10, fed_by), batch_size=4, linger_s=PATIENT)

    with anyio.fail_after(5):
        result = await wf.run()

    assert fn.sizes == [4, 4, 2]
    assert result.results["b"] == list(range(10))


@pytest.mark.anyio
async def test_a_partial_batch_goes_to_fn_after_its_linger_when_the_upstream_stalls() -> None:
    # the upstream cannot produce item 2 until fn got a batch: only the linger can cut [0, 1]
    got_batch = anyio.Event()
    seen: list[list[int]] = []

    async def produce(x: int) -> int:
        if x == 2:
            await got_batch.wait()
        return x

    def batched(values: list[int]) -> list[int]:
        seen.append(values)
        got_batch.set()
        return values

    wf = Workflow("w").step("numbers", lambda: list(range(6)))
    wf.stream("produce", produce, after="numbers")
    wf.stream("b", batched, after="produce", batch_size=4, linger_s=0.01)

    with anyio.fail_after(5):
        result = await wf.run()

    assert seen[0] == [0, 1]
    assert result.results["b"] == list(range(6))


@pytest.mark.anyio
async def test_results_keep_their_items_keys_into_a_downstream_join() -> None:
    # the first batch waits until the second is done, so results do not come out in order
    second_done = anyio.Event()

    async def upper(values: list[str]) -> list[str]:
        if "a" in values:
            await second_done.wait()
        else:
            second_done.set()
        return [value.upper() for value in values]

    wf = Workflow("w").step("letters", lambda: list("abcdefg"))
    wf.stream("keyed", lambda x: x, after="letters", key=str.upper)
    wf.stream("upper", upper, after="keyed", batch_size=3, concurrency=2, linger_s=PATIENT)
    wf.stream("plain", lambda x: x, after="keyed")
    wf.join("both", after=["upper", "plain"])

    with anyio.fail_after(5):
        result = await wf.run()

    pairs = sorted((item["upper"], item["plain"]) for item in result.results["both"])
    assert pairs == [(letter.upper(), letter) for letter in "abcdefg"]


@pytest.mark.anyio
async def test_an_item_error_makes_exactly_its_item_a_failure_that_reaches_the_sink() -> None:
    error = ValueError("no 3")
    recorded: list[Any] = []
    wf = Workflow("w").step("numbers", lambda: list(range(6)))
    wf.stream(
        "check",
        Batches(lambda x: ItemError(error) if x == 3 else x),
        after="numbers",
        batch_size=4,
    )
    wf.stream("middle", lambda x: x, after="check")
    wf.stream("sink", recorded.append, after="middle", accepts_failures=True, collect=False)

    await wf.run()

    assert recorded == [0, 1, 2, Failure(key=3, task="check", error=error, value=3), 4, 5]


@pytest.mark.anyio
async def test_fn_raising_makes_every_item_of_its_batch_a_failure() -> None:
    error = ValueError("batch with 4")

    def check(values: list[int]) -> list[int]:
        if 4 in values:
            raise error
        return values

    wf = Workflow("w").step("numbers", lambda: list(range(7)))
    wf.stream("check", check, after="numbers", batch_size=3)

    result = await wf.run()

    out = result.results["check"]
    assert [out[i] for i in (0, 1, 2, 6)] == [0, 1, 2, 6]
    assert out[3:6] == [Failure(key=x, task="check", error=error, value=x) for x in (3, 4, 5)]


class Fatal(Exception):
    """An error no later item can escape."""


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["raised", "returned"])
async def test_a_fatal_error_fails_the_task(how: str) -> None:
    error = Fatal("disk gone")

    def check(values: list[int]) -> list[Any]:
        if how == "raised":
            raise error
        return [ItemError(error) for _ in values]

    wf = Workflow("w").step("numbers", lambda: list(range(5)))
    wf.stream(
        "check",
        check,
        after="numbers",
        batch_size=2,
        policy=Policy(fatal=lambda exc: isinstance(exc, Fatal)),
    )

    with pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "check"
    assert info.value.cause is error


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("results", "returned"),
    [(lambda values: values[:-1], 3), (lambda values: [*values, 0], 5)],
    ids=["too-short", "too-long"],
)
async def test_results_of_the_wrong_length_fail_the_task_naming_both_lengths(
    results: Callable[[list[int]], list[int]], returned: int
) -> None:
    wf = Workflow("w").step("numbers", lambda: list(range(8)))
    wf.stream("check", results, after="numbers", batch_size=4)

    with pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "check"
    assert "'check'" in str(info.value)
    assert f"returned {returned} results for a batch of 4 items" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "results",
    [lambda values: None, lambda values: iter(values), lambda values: "abcd"],
    ids=["none", "iterator", "string"],
)
async def test_results_that_are_not_a_sequence_fail_the_task(
    results: Callable[[list[int]], Any],
) -> None:
    wf = Workflow("w").step("numbers", lambda: list(range(4)))
    wf.stream("check", results, after="numbers", batch_size=4)

    with pytest.raises(TaskFailedError) as info:
        await wf.run()

    assert info.value.task == "check"
    assert isinstance(info.value.cause, TypeError)


@pytest.mark.anyio
@pytest.mark.parametrize("fed_by", FED_BY)
@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_exactly_concurrency_batches_are_in_flight_at_most(
    concurrency: int, fed_by: str
) -> None:
    in_flight = peak = 0
    full = anyio.Event()

    async def work(values: list[int]) -> list[int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == concurrency:
            full.set()
        await full.wait()
        in_flight -= 1
        return values

    wf = Workflow("w")
    after = feed(wf, 20, fed_by)
    wf.stream("b", work, after=after, batch_size=2, concurrency=concurrency, linger_s=PATIENT)

    with anyio.fail_after(5):
        result = await wf.run()

    assert peak == concurrency
    assert sorted(result.results["b"]) == list(range(20))


@pytest.mark.anyio
async def test_idle_workers_fill_one_batch_at_a_time_from_a_trickling_upstream() -> None:
    async def trickle(x: int) -> int:
        await anyio.lowlevel.checkpoint()  # one item per turn of the event loop
        return x

    fn = Batches()
    wf = Workflow("w").step("numbers", lambda: list(range(6)))
    wf.stream("up", trickle, after="numbers")
    wf.stream("b", fn, after="up", batch_size=2, concurrency=3, linger_s=PATIENT)

    with anyio.fail_after(5):
        await wf.run()

    assert sorted(fn.seen) == [[0, 1], [2, 3], [4, 5]]


def odd_failures(wf: Workflow, fed_by: str) -> str:
    """Add 8 numbers whose odd ones are Failures of task ``check``; return the task to follow."""
    if fed_by == "result":
        wf.step(
            "check",
            lambda: [x if x % 2 == 0 else Failure(x, "check", ValueError(x), x) for x in range(8)],
        )
    else:
        wf.step("numbers", lambda: list(range(8)))
        wf.stream("check", fail_odd, after="numbers")
    return "check"


@pytest.mark.anyio
@pytest.mark.parametrize("fed_by", FED_BY)
async def test_failures_from_upstream_bypass_the_batches(fed_by: str) -> None:
    fn = Batches()
    wf = Workflow("w")
    wf.stream("b", fn, after=odd_failures(wf, fed_by), batch_size=3, linger_s=PATIENT)

    result = await wf.run()

    assert sorted(value for batch in fn.seen for value in batch) == [0, 2, 4, 6]
    failures = [item for item in result.results["b"] if isinstance(item, Failure)]
    assert sorted((f.key, f.task) for f in failures) == [(x, "check") for x in (1, 3, 5, 7)]


@pytest.mark.anyio
@pytest.mark.parametrize("fed_by", FED_BY)
async def test_a_task_accepting_failures_gets_them_in_its_batches(fed_by: str) -> None:
    fn = Batches()
    wf = Workflow("w")
    after = odd_failures(wf, fed_by)
    wf.stream("b", fn, after=after, batch_size=3, linger_s=PATIENT, accepts_failures=True)

    await wf.run()

    assert fn.sizes == [3, 3, 2]
    values = [value for batch in fn.seen for value in batch]
    assert values[0::2] == [0, 2, 4, 6]
    assert [failure.key for failure in values[1::2]] == [1, 3, 5, 7]


def fail_3_and_7(x: int) -> Any:
    return ItemError(ValueError(x)) if x in (3, 7) else x


@pytest.mark.anyio
async def test_metrics_count_items_not_batches() -> None:
    wf = Workflow("w").step("numbers", lambda: list(range(10)))
    wf.stream("b", Batches(fail_3_and_7), after="numbers", batch_size=4)

    result = await wf.run(hooks=[MetricsHook()])

    metrics = result.metrics["b"]
    assert (metrics.items_in, metrics.items_out, metrics.items_failed) == (10, 8, 2)


@pytest.mark.anyio
async def test_each_item_is_reported_with_its_batchs_latency(recorder: Recorder) -> None:
    wf = Workflow("w").step("numbers", lambda: list(range(6)))
    wf.stream("b", Batches(fail_3_and_7), after="numbers", batch_size=3)

    await wf.run(hooks=[recorder])

    mine = [(name, f) for name, f in recorder.events if f.get("task") == "b" and "key" in f]
    assert [(name, f["key"]) for name, f in mine] == [
        *(("item_start", key) for key in (0, 1, 2)),
        *(("item_done", key) for key in (0, 1, 2)),
        *(("item_start", key) for key in (3, 4, 5)),
        ("item_failed", 3),
        *(("item_done", key) for key in (4, 5)),
    ]
    latencies = [f["latency"] for name, f in mine if name != "item_start"]
    assert len(set(latencies[:3])) == len(set(latencies[3:])) == 1


async def no_wait(delay: float) -> None:
    pass


def retry_everything(exc: BaseException) -> bool:
    return True


@pytest.mark.anyio
async def test_a_failed_call_retries_the_whole_batch() -> None:
    calls: list[list[int]] = []

    def flaky(values: list[int]) -> list[int]:
        calls.append(list(values))
        if len(calls) == 1:
            raise ValueError("first call")
        return values

    policy = Policy(retries=1, retry_on=retry_everything, sleep=no_wait)
    wf = Workflow("w").step("numbers", lambda: list(range(3)))
    wf.stream("b", flaky, after="numbers", batch_size=3, policy=policy)

    result = await wf.run()

    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert result.results["b"] == [0, 1, 2]


@pytest.mark.anyio
async def test_a_retried_batch_reports_a_retry_of_each_item(recorder: Recorder) -> None:
    def always(values: list[int]) -> list[int]:
        raise ValueError("never")

    policy = Policy(retries=2, retry_on=retry_everything, sleep=no_wait)
    wf = Workflow("w").step("numbers", lambda: list(range(3)))
    wf.stream("b", always, after="numbers", batch_size=3, policy=policy)

    result = await wf.run(hooks=[recorder])

    retries = [(f["attempt"], f["key"]) for f in recorder.named("retry")]
    assert retries == [(attempt, key) for attempt in (1, 2) for key in (0, 1, 2)]
    assert [failure.attempts for failure in result.results["b"]] == [3, 3, 3]


@pytest.mark.anyio
async def test_the_item_timeout_applies_to_the_whole_batch() -> None:
    async def hang(values: list[int]) -> list[int]:
        await anyio.Event().wait()
        return values

    wf = Workflow("w").step("numbers", lambda: list(range(3)))
    wf.stream("b", hang, after="numbers", batch_size=2, policy=Policy(item_timeout=0.01))

    with anyio.fail_after(5):
        result = await wf.run()

    out = result.results["b"]
    assert [failure.key for failure in out] == [0, 1, 2]
    assert all(isinstance(failure.error, TimeoutError) for failure in out)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": -1},
        {"batch_size": 2.0},
        {"batch_size": True},
        {"batch_size": 4, "linger_s": -0.001},
        {"batch_size": 4, "linger_s": math.nan},
    ],
    ids=repr,
)
def test_invalid_batching_options_are_refused_naming_the_task(options: dict[str, Any]) -> None:
    wf = Workflow("w").step("numbers", list)

    with pytest.raises(GraphError) as info:
        wf.stream("b", Batches(), after="numbers", **options)

    assert info.value.tasks == ("b",)
    assert "'b'" in str(info.value)


def test_an_item_error_wraps_an_exception() -> None:
    with pytest.raises(TypeError):
        ItemError("not an exception")  # type: ignore[arg-type]


@st.composite
def batched_runs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.integers(-1000, 1000), unique=True, max_size=60))

    def some_keys() -> set[int]:
        return draw(st.sets(st.sampled_from(keys))) if keys else set()

    return {
        "keys": keys,
        "upstream_fails": some_keys(),
        "item_errors": some_keys(),
        "raise_on": some_keys(),
        "batch_size": draw(st.integers(1, 8)),
        "concurrency": draw(st.integers(1, 4)),
        "channel_size": draw(st.integers(0, 3)),
        "linger_s": draw(st.sampled_from([0.0, 0.0005, PATIENT])),
        "accepts_failures": draw(st.booleans()),
    }


def key_of(item: Any) -> int:
    key = item.key if isinstance(item, Failure) else item[0]
    assert isinstance(key, int)
    return key


@settings(max_examples=40, deadline=None)
@given(run=batched_runs())
def test_every_key_comes_out_of_a_batched_stream_exactly_once(run: dict[str, Any]) -> None:
    raised: set[int] = set()

    async def upstream(item: tuple[int, str]) -> tuple[int, str]:
        if item[0] % 2:
            await anyio.lowlevel.checkpoint()  # let items overtake each other
        if item[0] in run["upstream_fails"]:
            raise KeyError("upstream")
        return item

    async def batched(values: list[Any]) -> list[Any]:
        keys = [key_of(value) for value in values]
        if keys[0] % 3 == 0:
            await anyio.lowlevel.checkpoint()  # let batches overtake each other
        if run["raise_on"].intersection(keys):
            raised.update(keys)
            raise RuntimeError("batch")
        return [
            ItemError(ValueError(key)) if key in run["item_errors"] else value
            for key, value in zip(keys, values, strict=True)
        ]

    wf = Workflow("batched", channel_size=run["channel_size"])
    wf.step("items", lambda: [(key, f"v{key}") for key in run["keys"]])
    wf.stream("up", upstream, after="items", key=lambda item: item[0], concurrency=2)
    wf.stream(
        "b",
        batched,
        after="up",
        batch_size=run["batch_size"],
        concurrency=run["concurrency"],
        linger_s=run["linger_s"],
        accepts_failures=run["accepts_failures"],
    )
    wf.stream("sink", lambda item: item, after="b", accepts_failures=True)

    out = wf.run_sync().results["sink"]

    assert collections.Counter(map(key_of, out)) == collections.Counter(run["keys"])
    failed = run["upstream_fails"] | run["item_errors"] | raised
    assert {key_of(item) for item in out if isinstance(item, Failure)} == failed
    for item in out:
        if not isinstance(item, Failure):
            assert item == (item[0], f"v{item[0]}")
        elif item.key in run["upstream_fails"] and not run["accepts_failures"]:
            assert item.task == "up"
        elif item.key not in run["upstream_fails"]:
            assert item.task == "b"
