"""Failures: the envelope carried downstream in place of a value, and ItemError asking for one."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# One shared read-only mapping: most failures have no partial results.
_NO_PARTIAL: Mapping[str, Any] = MappingProxyType({})


def _no_partial() -> Mapping[str, Any]:
    return _NO_PARTIAL


@dataclass(frozen=True, slots=True)
class Failure:
    """An item that failed: its key, the task it failed in, the error and the input that failed.

    A stream task emits a Failure in place of the value it could not produce; downstream tasks
    forward it untouched unless they accept failures, so every failed item reaches a sink.
    ``partial`` holds what the other upstreams of a join produced for the same key.
    """

    key: Hashable
    task: str
    error: BaseException
    # left out of the hash: an input value or a mapping may be unhashable
    value: Any = field(hash=False)
    attempts: int = 1
    partial: Mapping[str, Any] = field(default_factory=_no_partial, hash=False)


@dataclass(frozen=True, slots=True)
class ItemError:
    """One item's failure, returned by a batched stream task's fn in place of that item's result.

    The engine turns it into a Failure of that item (its key, the task, ``error``, its input);
    the other results of the batch go on. It is not retried: retries apply to a whole batch.
    """

    error: Exception

    def __post_init__(self) -> None:
        if not isinstance(self.error, Exception):
            raise TypeError(f"ItemError wraps an exception, got {self.error!r}")
