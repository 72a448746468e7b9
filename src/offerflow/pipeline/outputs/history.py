"""Past runs, read back from their directories: one run's files, and the runs under a directory.

A run directory is read without a schema: ``summary.json`` and ``run.json`` gain keys from one
version to the next, and a run that is still going (or was killed) has no summary yet. The
tables (``offers.parquet``, ``requests.parquet``) may be one file or a directory of part files:
polars scans either from the same path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from offerflow.errors import UsageError
from offerflow.pipeline.outputs.console import aligned, format_number
from offerflow.pipeline.storage import is_remote, join, read_bytes

__all__ = [
    "PastRun",
    "RunTables",
    "list_runs",
    "open_run",
    "read_run",
    "runs_table",
    "runs_text",
    "task_graph",
]

SUMMARY = "summary.json"
MANIFEST = "run.json"
RUN_LOG = "run.log"

#: what the engine logs when a session of a run starts: one per session in ``run.log``
_SESSION_STARTED = ": run started"


@dataclass(frozen=True, slots=True)
class PastRun:
    """A run directory read back: its summary, its manifest, and where its tables are."""

    dir: Path
    #: ``summary.json``, or empty while the run has not written one
    summary: Mapping[str, Any]
    #: ``run.json``, or empty when absent
    manifest: Mapping[str, Any]

    @property
    def run_id(self) -> str:
        """The run's id: its directory's name unless its files say otherwise."""
        return str(self.summary.get("run_id") or self.manifest.get("run_id") or self.dir.name)

    @property
    def partner(self) -> str:
        """The partner's name, or the name of the directory above the run's."""
        return str(
            self.summary.get("partner") or self.manifest.get("partner") or self.dir.parent.name
        )

    @property
    def status(self) -> str:
        """The summary's status, or ``unfinished`` while there is no summary."""
        return str(self.summary.get("status") or "unfinished")

    @property
    def as_of(self) -> str | None:
        """The run's as-of instant, as written (ISO 8601)."""
        value = self.summary.get("as_of") or self.manifest.get("as_of")
        return None if value is None else str(value)

    @property
    def started(self) -> datetime:
        """When the run started: the manifest's ``created_at``, else the directory's mtime."""
        created = self.manifest.get("created_at")
        if isinstance(created, str):
            try:
                return datetime.fromisoformat(created)
            except ValueError:
                pass
        return datetime.fromtimestamp(self.dir.stat().st_mtime, UTC)

    @property
    def ledger(self) -> Mapping[str, Any]:
        """The summary's ledgers (empty without a summary)."""
        ledger = self.summary.get("ledger")
        return ledger if isinstance(ledger, Mapping) else {}

    @property
    def sessions(self) -> int:
        """How many sessions the run took: 1, or more when it was resumed.

        The summary's ``sessions`` list when it has one; else the sessions started in
        ``run.log``, which every session appends to.
        """
        listed = self.summary.get("sessions")
        if isinstance(listed, list):
            return len(listed)
        try:
            with (self.dir / RUN_LOG).open(encoding="utf-8", errors="replace") as log:
                started = sum(_session_started(line) for line in log)
        except OSError:
            return 1
        return max(started, 1)

    @property
    def offers(self) -> Path:
        """``offers.parquet``: a file, or a directory of part files."""
        return self.dir / "offers.parquet"

    @property
    def requests(self) -> Path:
        """``requests.parquet``: a file, or a directory of part files."""
        return self.dir / "requests.parquet"

    @property
    def rejects(self) -> Path:
        """``rejects.csv``."""
        return self.dir / "rejects.csv"

    def scan(self, table: Path) -> pl.LazyFrame | None:
        """A lazy scan of one of the run's parquet tables, or None when it is not there."""
        if not table.exists() or (table.is_dir() and not any(table.glob("*.parquet"))):
            return None
        return pl.scan_parquet(table)


@dataclass(frozen=True, slots=True)
class RunTables:
    """A run's tables as polars LazyFrames, whatever ran it, and its summary.

    Each table is a Parquet dataset, a part file per partition of the run (one for a run in
    one process); the frames read every part. ``location`` is a directory or an ``s3://``
    URL; an object store is reached with the standard AWS environment variables.
    """

    location: str
    #: ``summary.json`` (empty while the run has not written one)
    summary: Mapping[str, Any]

    @property
    def offers(self) -> pl.LazyFrame:
        """One row per member: features, predictions, offer, status, error, latencies."""
        return self._scan("offers.parquet")

    @property
    def requests(self) -> pl.LazyFrame:
        """One row per HTTP attempt."""
        return self._scan("requests.parquet")

    @property
    def rejects(self) -> pl.LazyFrame:
        """One row per rejected input row: (file,) line, the raw values, the reason."""
        return self._scan("rejects.parquet")

    def _scan(self, table: str) -> pl.LazyFrame:
        where = f"{self.location.rstrip('/')}/{table}"
        if "://" in self.location:
            return pl.scan_parquet(f"{where}/*.parquet")
        return pl.scan_parquet(where)


def open_run(location: str | Path) -> RunTables:
    """The run at ``location`` (a run directory, or an ``s3://`` URL of one), ready to read;
    a UsageError when there is no run there."""
    text = str(location)
    if is_remote(text):
        content = read_bytes(join(text, SUMMARY))
        return RunTables(text, json.loads(content) if content is not None else {})
    return RunTables(text, read_run(Path(text)).summary)


def read_run(run_dir: Path) -> PastRun:
    """The run in ``run_dir``; a UsageError when it is not a run directory."""
    summary = _read_json(run_dir / SUMMARY)
    manifest = _read_json(run_dir / MANIFEST)
    if summary is None and manifest is None:
        raise UsageError(f"{run_dir}: not a run directory (no {SUMMARY} nor {MANIFEST})")
    return PastRun(run_dir, summary or {}, manifest or {})


def list_runs(out: Path, partner: str | None = None) -> list[PastRun]:
    """The runs under ``out`` (``<out>/<partner>/<run_id>/``), newest first."""
    partners = [out / partner] if partner is not None else _subdirs(out)
    runs = [
        read_run(run_dir)
        for partner_dir in partners
        for run_dir in _subdirs(partner_dir)
        if (run_dir / SUMMARY).is_file() or (run_dir / MANIFEST).is_file()
    ]
    return sorted(runs, key=lambda run: (run.started, run.run_id), reverse=True)


def runs_table(runs: Iterable[PastRun]) -> list[dict[str, Any]]:
    """One row per run for ``offerflow runs``: figures as numbers, for text or JSON."""
    rows = []
    for run in runs:
        by_status = run.ledger.get("members_by_status") or {}
        rows.append(
            {
                "run_id": run.run_id,
                "partner": run.partner,
                "status": run.status,
                "as_of": run.as_of,
                "members": run.ledger.get("members_in"),
                "ok": by_status.get("ok", 0) if run.ledger else None,
                "offers": dict(run.summary.get("offers_by_type") or {}),
                "wall_s": run.summary.get("wall_s"),
                "resumed": run.sessions > 1,
                "dir": str(run.dir),
            }
        )
    return rows


def runs_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows of :func:`runs_table` as plain aligned text, the partner shown when several."""
    rows = list(rows)
    several = len({row["partner"] for row in rows}) > 1
    header = ("run id", "status", "as of", "members", "ok", "offers", "wall", "resumed")
    lines = []
    for row in rows:
        offers = ", ".join(f"{offer} {n:,}" for offer, n in row["offers"].items())
        wall = row["wall_s"]
        cells = (
            row["run_id"],
            row["status"],
            (row["as_of"] or "—")[:10],
            format_number(row["members"]),
            format_number(row["ok"]),
            offers or "—",
            "—" if wall is None else f"{wall:,.1f} s",
            "yes" if row["resumed"] else "no",
        )
        lines.append((row["partner"], *cells) if several else cells)
    return aligned(("partner", *header) if several else header, lines)


def task_graph(summary: Mapping[str, Any]) -> tuple[dict[str, list[str]], str]:
    """The workflow's edges (task → its upstream tasks), and where they came from.

    The summary's ``dag`` when it has one. Otherwise they are derived from the tasks' kinds, in
    the order the summary lists them (the order they were added, upstream first):

    - a step follows every step before it (``read``; ``features`` after it; ``unscored``);
    - a join takes every stream no task has taken yet;
    - a stream ``x`` follows the join ``x_inputs`` when there is one; else the last stream
      (``record``) follows the one before it, and the one before it (the offer) takes the
      streams no task has taken yet; any other stream (a model) follows ``features``.

    A model fed by another model alone is drawn from ``features``: only ``dag`` tells.
    """
    tasks: Mapping[str, Mapping[str, Any]] = summary.get("tasks") or {}
    dag = summary.get("dag")
    if isinstance(dag, Mapping):
        return {name: [str(u) for u in dag.get(name) or ()] for name in tasks}, "summary.json"
    streams = [n for n, t in tasks.items() if t.get("kind") not in ("step", "join")]
    edges: dict[str, list[str]] = {}
    steps: list[str] = []
    waiting: list[str] = []  # streams whose items no task has taken yet
    for name, task in tasks.items():
        if task.get("kind") == "step":
            edges[name] = list(steps)
            steps.append(name)
            continue
        if task.get("kind") == "join":
            edges[name], waiting = waiting, []
            continue
        if f"{name}_inputs" in tasks:
            upstream = [f"{name}_inputs"]
        elif len(streams) > 1 and name == streams[-1]:
            upstream = [streams[-2]]
        elif len(streams) > 2 and name == streams[-2] and waiting:
            upstream = list(waiting)
        else:
            upstream = ["features"] if "features" in tasks else steps[-1:]
        edges[name] = upstream
        waiting = [*(w for w in waiting if w not in upstream), name]
    return edges, "derived from the tasks' kinds (summary.json has no dag)"


def _session_started(line: str) -> bool:
    if _SESSION_STARTED not in line:
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and _SESSION_STARTED in str(record.get("message", ""))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(document, dict):
        raise UsageError(f"{path}: unreadable: not a JSON object")
    return document


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(path) if entry.is_dir())
    except FileNotFoundError:
        return []
