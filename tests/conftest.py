"""Fixtures for the whole suite: the anyio backend and one bundled model server per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from offerflow.serving import BundledServer


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the client and the server use."""
    return "asyncio"


@pytest.fixture(scope="session")
def bundled() -> Iterator[BundledServer]:
    """The bundled model endpoints on 127.0.0.1, one worker, shared by the whole session."""
    with BundledServer(workers=1) as server:
        yield server
