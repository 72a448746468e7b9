"""Fixtures of the serving tests: the anyio backend and a running bundled server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from offerflow.serving import BundledServer


@pytest.fixture(scope="module")
def server() -> Iterator[BundledServer]:
    """A one-worker bundled server shared by the tests of a module."""
    with BundledServer(workers=1) as running:
        yield running
