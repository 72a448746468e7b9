"""A member on its way through the workflow, and the statuses it can end with."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

import polars as pl

__all__ = ["Member", "MemberRows", "Status"]


class Status(StrEnum):
    """The one status every member of the input ends with."""

    OK = "ok"
    NO_TRANSACTIONS = "no_transactions"
    MODEL_ERROR = "model_error"
    INVALID_RESPONSE = "invalid_response"
    ENDPOINT_UNAVAILABLE = "endpoint_unavailable"
    TLS_ERROR = "tls_error"
    #: a cluster could not run the member's partition (its workers died on it, time and again)
    PARTITION_FAILED = "partition_failed"
    INTERRUPTED = "interrupted"


class Member:
    """A member's features and whatever the endpoints have answered for it so far.

    One object per member travels the whole workflow, shared by the parallel branches: each
    endpoint writes only its own entries (its prediction, latency and attempts; the offer
    endpoint the offer) and the event loop runs one branch at a time, so they never collide and
    nothing is copied on the way. A join then hands on the very object its branches answered.
    Slotted and built once per member: an answer costs three dict stores, not a new member
    (``docs/architecture.md``, "One Member object per member").
    """

    __slots__ = (
        "attempts",
        "deadline",
        "features",
        "latencies_ms",
        "member_id",
        "offer",
        "predictions",
    )

    def __init__(
        self, member_id: str, features: Mapping[str, Any], *, deadline: float = math.inf
    ) -> None:
        self.member_id = member_id
        self.features = features
        self.predictions: dict[str, float] = {}
        self.offer: str | None = None
        #: per stage (endpoint name): the call's latency including retries, and its attempts
        self.latencies_ms: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        #: time.monotonic() by which the member's scoring must end; set by its first call
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"Member({self.member_id!r}, predictions={self.predictions}, offer={self.offer!r})"

    def answer(self, stage: str, value: float | str, latency_ms: float, attempts: int) -> Member:
        """Record one stage's answer (a prediction, or the offer: a label); returns the member."""
        if isinstance(value, str):
            self.offer = value
        else:
            self.predictions[stage] = float(value)
        self.latencies_ms[stage] = latency_ms
        self.attempts[stage] = attempts
        return self

    @staticmethod
    def of(states: Iterable[Member]) -> Member:
        """The member that parallel branches handed on (each hands on the same object)."""
        first, *others = states
        assert all(other is first for other in others), "branches of one member share it"
        return first


class MemberRows:
    """Members built from a features table, lazily, one slice at a time; iterable many times.

    Iteration ends early, as if the table ended, once ``stop()`` returns True: that is how a
    stopping run stops taking new members. It ends at the first member no iteration has taken
    yet, so that parallel branches fed by the same rows end on the same members and a join of
    them sees every member it was given from each branch.
    """

    def __init__(
        self,
        features: pl.DataFrame,
        *,
        slice_rows: int = 8192,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.table = features
        self._slice_rows = slice_rows
        self._stop = stop
        self._taken = 0  # members given out by the furthest iteration so far
        # The members of the slices most recently built: parallel branches iterate in step,
        # so the one behind takes the same Member objects instead of building its own.
        self._built: dict[int, list[Member]] = {}

    def __len__(self) -> int:
        return self.table.height

    def __iter__(self) -> Iterator[Member]:
        position = 0
        for start in range(0, self.table.height, self._slice_rows):
            for member in self._slice(start):
                if position >= self._taken and self._stop():
                    return
                position += 1
                self._taken = max(self._taken, position)
                yield member

    def _slice(self, start: int) -> list[Member]:
        members = self._built.get(start)
        if members is None:
            chunk = self.table.slice(start, self._slice_rows)
            names = [c for c in chunk.columns if c != "member_id"]
            ids = chunk.get_column("member_id").to_list()
            members = [
                Member(member_id, dict(zip(names, row, strict=True)))
                for member_id, row in zip(ids, chunk.select(names).rows(), strict=True)
            ]
            self._built = {s: m for s, m in self._built.items() if s > start - 2 * self._slice_rows}
            self._built[start] = members
        return members
