"""Fixtures of the fault server's tests: servers started for one test and always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.faults.process import FaultServer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FaultServer]]:
    """Start servers for one test: ``serve(plan, **options)``; all are stopped after it."""
    servers: list[FaultServer] = []

    def start(plan: Mapping[str, Any], **options: Any) -> FaultServer:
        servers.append(FaultServer(plan, tmp_path, **options))
        return servers[-1].start()

    yield start
    for server in servers:
        server.stop()
