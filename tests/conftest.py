"""Fixtures for the whole suite: the anyio backend, one bundled model server per session, and
an environment without the developer's proxies."""

from __future__ import annotations

import os
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


@pytest.fixture(autouse=True)
def _no_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests call servers on 127.0.0.1 directly, whatever proxy the developer's shell sets.

    ``load_config`` reads HTTP(S)_PROXY and NO_PROXY; a test of them sets them itself.
    """
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
            monkeypatch.delenv(name)
