"""What a person sees of a run: progress while it runs, a summary table when it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offerflow.engine import Hook

__all__ = ["ConsoleReport"]

log = logging.getLogger(__name__)

_RECORD_TASK = "record"


class ConsoleReport(Hook):
    """A progress bar on a terminal, a log line every few seconds elsewhere, and a final table."""

    def __init__(self, stream: TextIO, *, every_s: float = 5.0) -> None:
        self._console = Console(file=stream, stderr=True)
        self._live = self._console.is_terminal
        self._every_s = every_s
        self._done = 0
        self._started = time.perf_counter()
        self._last_line = self._started
        self._progress: Progress | None = None
        self._bar: Any = None

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        self._started = self._last_line = time.perf_counter()
        if self._live:
            self._progress = Progress(
                TextColumn("[bold]members recorded"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar = self._progress.add_task("members", total=None, rate="")
            self._progress.start()

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        log.info("task %s finished%s", task, "" if error is None else f" with error: {error}")

    def on_item_done(self, *, task: str, key: Hashable, latency: float) -> None:
        if task != _RECORD_TASK:
            return
        self._done += 1
        now = time.perf_counter()
        if self._progress is not None:
            if self._done % 64 == 0:
                rate = self._done / max(now - self._started, 1e-9)
                self._progress.update(self._bar, completed=self._done, rate=f"{rate:,.0f}/s")
        elif now - self._last_line >= self._every_s:
            self._last_line = now
            rate = self._done / max(now - self._started, 1e-9)
            log.info("progress: %d members recorded, %.0f members/s", self._done, rate)

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def final(self, summary: Mapping[str, Any], run_dir: Path) -> None:
        """Print the run's summary table and where its files are."""
        ledger = summary["ledger"]
        table = Table(title=f"offerflow run {summary['run_id']} — partner {summary['partner']}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row(
            "rows in / used / rejected",
            f"{ledger['rows_in']:,} / {ledger['rows_used']:,} / {ledger['rows_rejected']:,}",
        )
        table.add_row("members", f"{ledger['members_in']:,}")
        for status, count in ledger["members_by_status"].items():
            table.add_row(f"  status {status}", f"{count:,}")
        for offer, count in summary["offers_by_type"].items():
            table.add_row(f"  offer {offer}", f"{count:,}")
        table.add_row("wall time", f"{summary['wall_s']:.2f} s")
        table.add_row("members/s", f"{summary['members_per_s'] or 0:,.0f}")
        for endpoint, figures in summary["endpoints"].items():
            table.add_row(
                f"  {endpoint} p99 latency",
                f"{figures['p99_ms']:.1f} ms ({figures['requests']:,} requests)",
            )
        self._console.print(table)
        self._console.print(f"run directory: {run_dir}", soft_wrap=True)
