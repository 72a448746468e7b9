"""Fixtures of the serving tests: the anyio backend and a running bundled server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from offerflow.serving import BundledServer


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop the server and the client use."""
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[BundledServer]:
    """A one-worker bundled server shared by the tests of a module."""
    with BundledServer(workers=1) as running:
        yield running
