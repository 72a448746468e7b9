"""The Failure envelope: an item that failed, carried downstream in place of its value."""

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
