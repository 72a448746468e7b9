"""``report.html``: its sections, what it loads (nothing), and what it reads from a run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from offerflow.pipeline import write_report
from offerflow.pipeline.outputs.report import SECTIONS
from offerflow.pipeline.outputs.report.markup import table
from tests.conftest import PastRuns
from tests.pipeline.outputs.run_dirs import write_run


@pytest.fixture
def run(past_runs: PastRuns, tmp_path: Path) -> Path:
    """A copy of the March run, to write into."""
    return shutil.copytree(past_runs.march, tmp_path / "march")


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z-]+)">', page)


def _summary(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text())
    return summary


def test_every_section_is_there_once_and_the_baseline_only_when_given(
    run: Path, past_runs: PastRuns
) -> None:
    path = write_report(run)
    assert path == run / "report.html"
    assert _sections(path.read_text()) == list(SECTIONS[:-1])
    write_report(run, baseline=past_runs.january)
    assert _sections(path.read_text()) == list(SECTIONS)


def test_the_page_runs_no_script_and_refers_only_to_itself(run: Path) -> None:
    page = write_report(run).read_text()
    assert "<script" not in page.lower()
    assert "@import" not in page
    assert [u for u in re.findall(r"url\(([^)]*)\)", page) if not u.startswith("#")] == []
    references = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert references  # the SVGs' own definitions and the 2-D histogram's image
    assert [r for r in references if not r.startswith(("#", "data:image/png;base64,"))] == []
    assert "Content-Security-Policy\" content=\"default-src 'none';" in page


def test_the_page_holds_aggregates_not_rows(run: Path) -> None:
    page = write_report(run).read_text()
    offers = pl.read_parquet(run / "offers.parquet").filter(pl.col("status") == "ok")
    assert offers.height > 500
    assert [m for m in offers.get_column("member_id") if m in page] == []


def test_the_page_shows_the_runs_figures(run: Path) -> None:
    summary = _summary(run)
    page = write_report(run).read_text()
    assert f"<td>run id</td><td>{summary['run_id']}</td>" in page
    assert f"<td>config hash</td><td>{summary['config_hash']}</td>" in page
    offered = sum(summary["offers_by_type"].values())
    for offer, n in summary["offers_by_type"].items():
        assert f">{offer}</text>" in page
        assert f"{n:,} ({n / offered:.1%})" in page
    for status, n in summary["ledger"]["members_by_status"].items():
        assert f"{status}: {n:,} (" in page


def test_task_times_in_the_summary_draw_the_timeline(run: Path) -> None:
    summary = _summary(run)
    assert all(task["started_s"] is not None for task in summary["tasks"].values())
    assert "tasks over time (summary.json)" in write_report(run).read_text()
    for task in summary["tasks"].values():
        del task["started_s"], task["ended_s"]
    (run / "summary.json").write_text(json.dumps(summary))
    assert "tasks over time (endpoints from requests.parquet" in write_report(run).read_text()


def test_tables_written_as_directories_of_parts_give_the_same_page(run: Path) -> None:
    before = write_report(run).read_text()
    for name in ("offers.parquet", "requests.parquet"):
        (part,) = (run / name).iterdir()  # a run in one process writes one part
        table = pl.read_parquet(part)
        part.unlink()
        half = table.height // 2
        table[:half].write_parquet(run / name / "part-00000.parquet")
        table[half:].write_parquet(run / name / "part-00001.parquet")
    assert write_report(run).read_text() == before


def test_tables_written_as_one_file_give_the_same_page(run: Path) -> None:
    before = write_report(run).read_text()
    for name in ("offers.parquet", "requests.parquet"):
        table = pl.read_parquet(run / name)
        shutil.rmtree(run / name)
        table.write_parquet(run / name)  # as runs wrote them before tables had parts
    assert write_report(run).read_text() == before


def test_a_run_with_empty_tables_still_gets_every_section(run: Path) -> None:
    for name in ("offers.parquet", "requests.parquet"):
        (part,) = (run / name).iterdir()
        pl.read_parquet(part).clear().write_parquet(part)
    page = write_report(run).read_text()
    assert _sections(page) == list(SECTIONS[:-1])
    assert "no member has both predictions" in page


def test_a_run_without_summary_or_tables_still_gets_every_section(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", manifest={"run_id": "r", "partner": "default"})
    page = write_report(run).read_text()
    assert _sections(page) == list(SECTIONS[:-1])
    assert "this run has no ats and resp predictions" in page


def test_a_table_aligns_figures_right_and_words_left() -> None:
    figures = ["1,800", "0.3 → 0.25", "+4.5 pts", "-19%", "3"]
    words = ["ats", "—", "DRIFT psi", "x%"]
    html = table(("a",) * 9, [(*figures, *words)])
    cells = re.findall(r"<td( class=\"n\")?>([^<]*)</td>", html)
    assert [text for numeric, text in cells if numeric] == figures
    assert [text for numeric, text in cells if not numeric] == words
