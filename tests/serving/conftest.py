"""Fixtures of the serving tests: a running bundled server and a client session on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from offerflow.serving import BundledServer


@pytest.fixture(scope="package")
def server() -> Iterator[BundledServer]:
    """A one-worker bundled server shared by the serving tests: it keeps no state between calls."""
    with BundledServer(workers=1) as running:
        yield running


@pytest.fixture
async def http(server: BundledServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the running server."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(server.base_url, timeout=timeout) as session:
        yield session
