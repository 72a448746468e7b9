"""Helpers of the fault matrix: inputs, partner configs, CLI runs, and the whole-run check.

Every scenario of ``test_fault_matrix.py`` ends with :func:`assert_whole`: whatever the fault,
no member is lost or doubled and every output file is there and readable. The figures the
scenarios measure are reported through :func:`report` (the DEBUG log and :data:`FIGURES`); a
CLI run's ending is read back from its files and its log (:func:`log_messages`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import polars as pl

from offerflow.config import PartnerConfig, load_config
from offerflow.pipeline import RunReport, Shutdown, parse_as_of, run_pipeline
from offerflow.pipeline import generate_transactions as _generate
from offerflow.pipeline import write_transactions as _write
from tests.faults import POST_ROUTES, FaultServer
from tests.partner_files import default_document, write_partner

__all__ = [
    "AS_OF",
    "FIGURES",
    "MEMBER_COLUMN",
    "Cli",
    "Whole",
    "assert_whole",
    "calls",
    "input_members",
    "log_messages",
    "mark",
    "partner",
    "report",
    "run",
    "wait_until",
    "write_input",
]

log = logging.getLogger(__name__)

AS_OF = "2024-01-10"
#: the default partner's member id column
MEMBER_COLUMN = "memberId"
#: (scenario, figure, value) of every figure measured in this session
FIGURES: list[tuple[str, str, str]] = []

_POLL_S = 0.01


def report(scenario: str, figure: str, value: object) -> None:
    """Keep a measured figure for the session's table (logged at DEBUG, not printed)."""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    FIGURES.append((scenario, figure, text))
    log.debug("fault matrix | %s | %s | %s", scenario, figure, text)


def write_input(path: Path, members: int, *, seed: int) -> Path:
    """Write a synthetic transactions file of ``members`` members; returns its path."""
    _write(_generate(members, seed=seed), path)
    return path


def input_members(path: Path) -> set[str]:
    """The distinct non-empty member ids of an input CSV, read with the csv module."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {row[MEMBER_COLUMN].strip() for row in csv.DictReader(handle)} - {""}


def _input_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def partner(
    directory: Path,
    base_url: str,
    data: Path,
    *,
    endpoint: Mapping[str, Any] | None = None,
    **changes: Any,
) -> Path:
    """Write the default partner pointed at ``base_url`` and ``data``; returns the YAML's path.

    ``endpoint`` settings apply to every endpoint, ``changes`` to the partner's top level
    (a dict value is merged into the default one, e.g. ``output={"chunk_rows": 25}``).
    """
    document = default_document(base_url, data)
    for spec in [*document["models"], document["offer"]]:
        spec.update(endpoint or {})
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return write_partner(directory / "partner.yaml", document)


async def run(
    config: Path | PartnerConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    shutdown: Shutdown | None = None,
) -> RunReport:
    """Run the pipeline in-process into ``run_dir``, made unless an earlier run made it."""
    loaded = config if isinstance(config, PartnerConfig) else load_config(config)
    await anyio.Path(run_dir).mkdir(parents=True, exist_ok=True)
    as_of = parse_as_of(AS_OF)
    return await run_pipeline(
        loaded, run_dir=run_dir, as_of=as_of, resume=resume, shutdown=shutdown
    )


def mark(server: FaultServer) -> int:
    """The length of the server's request log now: where the requests of what follows begin."""
    return len(server.requests())


def calls(server: FaultServer, since: int = 0) -> list[dict[str, Any]]:
    """The model and offer calls the server logged, from log entry ``since`` on.

    Other requests (a run's contract check asks for ``/openapi.json``) are left out.
    """
    return [entry for entry in server.requests()[since:] if entry["path"] in POST_ROUTES]


@dataclass(frozen=True, slots=True)
class Whole:
    """The output files of a finished run, read back."""

    offers: pl.DataFrame
    requests: pl.DataFrame
    rejects: pl.DataFrame
    summary: dict[str, Any]

    @property
    def by_status(self) -> dict[str, int]:
        """Members per status, from summary.json."""
        counts: dict[str, int] = self.summary["ledger"]["members_by_status"]
        return counts

    @property
    def scored(self) -> int:
        """Members with at least one usable transaction: those that need model calls."""
        members_in: int = self.summary["ledger"]["members_in"]
        return members_in - self.by_status.get("no_transactions", 0)

    def members(self, *statuses: str) -> set[str]:
        """The member ids with one of the statuses."""
        rows = self.offers.filter(pl.col("status").is_in(statuses))
        return set(rows.get_column("member_id"))


def assert_whole(run_dir: Path, input_csv: Path) -> Whole:
    """Assert that a finished run lost and doubled no member and wrote readable outputs."""
    offers = pl.read_parquet(run_dir / "offers.parquet")
    requests = pl.read_parquet(run_dir / "requests.parquet")
    rejects = pl.read_csv(run_dir / "rejects.csv", infer_schema=False)
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())

    ids = offers.get_column("member_id")
    expected = input_members(input_csv)
    lost, foreign = expected - set(ids), set(ids) - expected
    assert not lost, f"{len(lost)} members lost, e.g. {sorted(lost)[:5]}"
    assert not foreign, f"{len(foreign)} members not in the input, e.g. {sorted(foreign)[:5]}"
    duplicated = ids.filter(ids.is_duplicated()).unique().to_list()
    assert not duplicated, f"{len(duplicated)} members with several rows, e.g. {duplicated[:5]}"

    ledger = summary["ledger"]
    assert ledger["balanced"] is True
    assert ledger["rows_in"] == _input_rows(input_csv)
    assert ledger["rows_in"] == ledger["rows_used"] + ledger["rows_rejected"]
    assert ledger["rows_rejected"] == rejects.height
    assert ledger["members_in"] == len(expected)
    assert sum(ledger["members_by_status"].values()) == ledger["members_in"]
    statuses = offers.get_column("status").value_counts()
    assert ledger["members_by_status"] == dict(statuses.iter_rows())
    return Whole(offers, requests, rejects, summary)


def log_messages(run_dir: Path) -> list[str]:
    """The messages of a CLI run's ``run.log``, in the order they were logged."""
    lines = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["message"] for line in lines]


def wait_until(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout_s: float = 30.0,
    alive: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` or if ``alive`` exits first.

    The conditions are other processes' files (the server's log, a run's chunks): there is no
    event to wait on, so this polls.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the run exited ({alive.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s:g} s")
        time.sleep(_POLL_S)


class Cli:
    """``python -m offerflow`` processes of one test; any still running at the end are killed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stderr = directory / "cli-stderr.log"
        self._files: list[IO[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``offerflow ARGS`` in its own process group, its output kept in a file."""
        err = self._stderr.open("ab")
        self._files.append(err)
        process = subprocess.Popen(
            [sys.executable, "-m", "offerflow", *args],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def run(self, *args: str, timeout_s: float = 60.0) -> int:
        """Run ``offerflow ARGS`` to its end; returns its exit code."""
        return self.start(*args).wait(timeout_s)

    def stderr(self) -> str:
        """What the processes wrote so far (for failure messages)."""
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def close(self) -> None:
        """Kill every process still running, with its group, and reap it."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for file in self._files:
            file.close()
