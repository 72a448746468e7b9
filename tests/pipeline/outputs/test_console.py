"""The console report: the summary table as plain lines off a terminal, without importing rich."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from offerflow.pipeline.outputs import console
from offerflow.pipeline.outputs.console import ConsoleReport, summary_rows

SUMMARY: dict[str, Any] = {
    "run_id": "r1",
    "partner": "acme",
    "ledger": {
        "rows_in": 4335,
        "rows_used": 4225,
        "rows_rejected": 110,
        "members_in": 990,
        "members_by_status": {"no_transactions": 100, "ok": 890},
    },
    "offers_by_type": {"OFFER_1": 647, "OFFER_2": 243},
    "wall_s": 1.234,
    "members_per_s": 802.3,
    "tasks": {"ats": {"p99_ms": 26.04}},
    "endpoints": {"ats": {"requests": 890, "errors": 0, "retries": 0}},
}


def test_the_summary_rows_carry_both_ledgers_and_the_latencies() -> None:
    rows = dict(summary_rows(SUMMARY))
    assert rows["rows in / used / rejected"] == "4,335 / 4,225 / 110"
    assert rows["members"] == "990"
    assert rows["  status ok"] == "890"
    assert rows["  offer OFFER_2"] == "243"
    assert rows["wall time"] == "1.23 s"
    assert rows["  ats p99 latency"] == "26.0 ms (890 requests)"


def test_off_a_terminal_the_table_is_plain_aligned_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    ConsoleReport(stream).final(SUMMARY, tmp_path)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "offerflow run r1 — partner acme"
    assert lines[-1] == f"run directory: {tmp_path}"
    rows = summary_rows(SUMMARY)
    assert len(lines) == len(rows) + 2
    for line, (figure, value) in zip(lines[1:-1], rows, strict=True):
        assert line.strip().startswith(figure.strip())
        assert line.endswith(value)
    # the values start in one column
    assert (
        len({len(line) - len(value) for line, (_, value) in zip(lines[1:-1], rows, strict=False)})
        == 1
    )


def test_a_report_off_a_terminal_does_not_import_rich(tmp_path: Path) -> None:
    code = (
        "import io, sys; from pathlib import Path\n"
        "from offerflow.pipeline.outputs.console import ConsoleReport\n"
        "from tests.pipeline.outputs.test_console import SUMMARY\n"
        "ConsoleReport(io.StringIO()).final(SUMMARY, Path('.'))\n"
        "print('rich' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"


def test_off_a_terminal_progress_logs_the_share_done_and_the_time_to_go(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = iter([100.0, 100.0, 110.0, 120.0])  # made, started, then two progress calls
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    report = ConsoleReport(io.StringIO(), every_s=5.0)
    report.on_run_start(workflow="w", tasks=())
    caplog.set_level(logging.INFO, logger=console.__name__)
    report.progress(2_000, None)  # 10 s in, the total not known yet
    report.progress(5_000, 20_000)  # 20 s in: 250 members/s, 15,000 to go
    assert [r.getMessage() for r in caplog.records] == [
        "progress: 2,000 members recorded, 200 members/s",
        "progress: 5,000 of 20,000 members recorded (25%), 250 members/s, about 60 s to go",
    ]
