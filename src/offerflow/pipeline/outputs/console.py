"""What a person sees of a run: progress while it runs, a summary table when it ends.

On a terminal both are drawn with rich; elsewhere (a log file, CI) they are plain lines, and
rich is not even imported: its import costs more than a small run's members.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from offerflow.engine import Hook

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["ConsoleReport", "aligned", "format_number", "summary_rows"]

log = logging.getLogger(__name__)


class ConsoleReport(Hook):
    """A progress bar on a terminal, a log line every few seconds elsewhere, and a final table.

    A hook for the run's start and end; the progress comes from :meth:`progress`, which the
    run calls a few times a second (not from per-item events: they would cost every member).
    """

    def __init__(self, stream: TextIO, *, every_s: float = 5.0) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._every_s = every_s
        self._started = time.perf_counter()
        self._last_line = self._started
        self._progress: Progress | None = None
        self._bar: Any = None

    def on_run_start(self, *, workflow: str, tasks: tuple[str, ...]) -> None:
        self._started = self._last_line = time.perf_counter()
        if self._live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]members recorded"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream, stderr=True),
                transient=True,
            )
            self._bar = self._progress.add_task("members", total=None, rate="")
            self._progress.start()

    def on_task_end(self, *, task: str, error: BaseException | None) -> None:
        log.info("task %s finished%s", task, "" if error is None else f" with error: {error}")

    def progress(self, done: int, total: int | None) -> None:
        """Show that ``done`` members of ``total`` (None: not known yet) are recorded."""
        now = time.perf_counter()
        rate = done / max(now - self._started, 1e-9)
        if self._progress is not None:
            self._progress.update(self._bar, completed=done, total=total, rate=f"{rate:,.0f}/s")
        elif now - self._last_line >= self._every_s:
            self._last_line = now
            line = f"progress: {done:,} members recorded, {rate:,.0f} members/s"
            if total:
                to_go = (total - done) / rate if rate else float("inf")
                line = (
                    f"progress: {done:,} of {total:,} members recorded ({done / total:.0%}), "
                    f"{rate:,.0f} members/s, about {to_go:,.0f} s to go"
                )
            log.info(line)

    def on_run_end(self, *, workflow: str, error: BaseException | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def final(self, summary: Mapping[str, Any], run_dir: Path | str) -> None:
        """Print the run's summary table and where its files are."""
        title = f"offerflow run {summary['run_id']} — partner {summary['partner']}"
        rows = summary_rows(summary)
        if self._live:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            table.add_column("figure")
            table.add_column("value", justify="right")
            for row in rows:
                table.add_row(*row)
            console = Console(file=self._stream, stderr=True)
            console.print(table)
            console.print(f"run directory: {run_dir}", soft_wrap=True)
            return
        width = max(len(figure) for figure, _ in rows)
        lines = [title, *(f"  {figure:<{width}}  {value}" for figure, value in rows)]
        lines.append(f"run directory: {run_dir}")
        self._stream.write("\n".join(lines) + "\n")


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures of a run's summary table: (figure, value) pairs, in order."""
    ledger = summary["ledger"]
    rows = [
        (
            "rows in / used / rejected",
            f"{ledger['rows_in']:,} / {ledger['rows_used']:,} / {ledger['rows_rejected']:,}",
        ),
        ("members", f"{ledger['members_in']:,}"),
    ]
    rows += [(f"  status {status}", f"{n:,}") for status, n in ledger["members_by_status"].items()]
    rows += [(f"  offer {offer}", f"{n:,}") for offer, n in summary["offers_by_type"].items()]
    rows.append(("wall time", f"{summary['wall_s']:.2f} s"))
    rows.append(("members/s", f"{summary['members_per_s'] or 0:,.0f}"))
    tasks = summary["tasks"]
    rows += [
        (f"  {name} p99 latency", f"{tasks[name]['p99_ms']:.1f} ms ({e['requests']:,} requests)")
        for name, e in summary["endpoints"].items()
        if name in tasks  # a run stopped before any member reached it has no figures for it
    ]
    return rows


def aligned(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    """Plain text columns, left-aligned, two spaces apart."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def format_number(value: object) -> str:
    """A figure for people: thousands separated, four significant digits below 1,000."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
