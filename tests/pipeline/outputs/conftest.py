"""Fixtures of the output tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

SetUmask = Callable[[int], int]


@pytest.fixture
def umask() -> Iterator[SetUmask]:
    """``os.umask`` for the test: the umask before it is restored after it."""
    before = os.umask(0o022)
    os.umask(before)
    try:
        yield os.umask
    finally:
        os.umask(before)
