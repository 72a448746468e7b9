"""Fixtures for the whole suite: the anyio backend, a bundled model server, two past runs,
and an environment without the developer's proxies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from offerflow.cli import main
from offerflow.errors import ExitCode
from offerflow.pipeline import generate_transactions, write_transactions
from offerflow.serving import BundledServer
from tests.partner_files import default_document, write_partner


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


class PastRuns(NamedTuple):
    """Two finished runs of the same generated input, as-of two months apart."""

    january: Path
    march: Path


@pytest.fixture(scope="session")
def past_runs(bundled: BundledServer, tmp_path_factory: pytest.TempPathFactory) -> PastRuns:
    """Two runs by the command line, as-of 2024-01-10 and 2024-03-10 (the data ends before).

    Shared by the tests that only read runs back: report, runs and compare.
    """
    root = tmp_path_factory.mktemp("past-runs")
    data = root / "members.csv"
    write_transactions(generate_transactions(800, seed=13), data)
    config = write_partner(root / "default.yaml", default_document(bundled.base_url, data))
    for run_id, as_of in (("january", "2024-01-10"), ("march", "2024-03-10")):
        argv = ["run", "--config", str(config), "--as-of", as_of]
        code = main([*argv, "--out", str(root / "runs"), "--run-id", run_id])
        assert code == ExitCode.OK
    runs = root / "runs" / "default"
    return PastRuns(runs / "january", runs / "march")


@pytest.fixture
def member_data() -> Path:
    """The default partner's real file, in the ``shared`` folder beside the repository."""
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "member_data.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path
