"""Fixtures of the engine tests: the anyio backend, a recording hook and small DAG shapes."""

from __future__ import annotations

import anyio
import pytest

from offerflow.engine import Workflow

from .recorder import Recorder
from .shapes import FailingShape, Shape


@pytest.fixture
def recorder() -> Recorder:
    """A fresh recording hook."""
    return Recorder()


@pytest.fixture
def diamond() -> Shape:
    """``a -> (b, c) -> d``, all steps; d returns what b and c gave it."""
    shape = Shape(Workflow("diamond"), edges=(("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")))

    def a() -> int:
        shape.calls.append("a")
        return 1

    async def b(a: int) -> int:
        shape.calls.append("b")
        return a + 10

    def c(a: int) -> int:
        shape.calls.append("c")
        return a + 100

    async def d(b: int, c: int) -> dict[str, int]:
        shape.calls.append("d")
        return {"b": b, "c": c}

    shape.wf.step("a", a).step("b", b, after=["a"]).step("c", c, after=["a"])
    shape.wf.step("d", d, after=["b", "c"])
    return shape


@pytest.fixture
def fan_out() -> Shape:
    """``numbers -> double -> (plus_one, minus_one)``: one stream feeding two."""
    shape = Shape(
        Workflow("fan_out", channel_size=2),
        edges=(("numbers", "double"), ("double", "plus_one"), ("double", "minus_one")),
    )

    async def numbers() -> list[int]:
        return list(range(10))

    shape.wf.step("numbers", numbers)
    shape.wf.stream("double", lambda x: 2 * x, after="numbers")
    shape.wf.stream("plus_one", lambda x: x + 1, after="double")
    shape.wf.stream("minus_one", lambda x: x - 1, after="double", concurrency=3)
    return shape


@pytest.fixture
def cycle() -> Shape:
    """``a -> b -> c -> a`` plus an independent task ``free`` that would record a call."""
    shape = Shape(Workflow("cycle"), edges=(("a", "b"), ("b", "c"), ("c", "a")))

    def free() -> None:
        shape.calls.append("free")

    shape.wf.step("free", free)
    shape.wf.step("a", free, after=["c"]).step("b", free, after=["a"])
    shape.wf.step("c", free, after=["b"])
    return shape


@pytest.fixture
def failing() -> FailingShape:
    """``boom`` raises once ``slow`` is running; ``slow`` waits for an event nobody sets."""
    shape = FailingShape(Workflow("failing"))
    slow_running = anyio.Event()

    async def slow() -> None:
        slow_running.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            shape.sibling_cancelled = True
            raise

    async def boom() -> None:
        await slow_running.wait()
        raise shape.error

    shape.wf.step("slow", slow).step("boom", boom)
    shape.wf.step("after_boom", lambda boom: shape.calls.append("after_boom"), after=["boom"])
    return shape
