"""The commands that look back at runs: ``report``, ``runs`` and ``compare``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from offerflow.cli import main
from offerflow.errors import ExitCode
from tests.conftest import PastRuns


def _compare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["compare", *argv, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_two_months_later_days_since_last_transaction_drifts_and_points_do_not(
    past_runs: PastRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _compare(capsys, str(past_runs.january), str(past_runs.march))
    assert code == ExitCode.OK
    columns = {c["name"]: c for c in figures["columns"]}  # type: ignore[attr-defined]
    assert columns["DAYS_SINCE_LAST_TRANSACTION"]["drifted"] is True
    assert columns["DAYS_SINCE_LAST_TRANSACTION"]["drifted_by"] == ["psi"]
    assert columns["AVG_POINTS_BOUGHT"]["drifted"] is False
    assert columns["AVG_POINTS_BOUGHT"]["psi"] == 0.0
    assert figures["drifted"] is True


def test_fail_on_drift_exits_5_naming_the_drifted_figures(
    past_runs: PastRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", str(past_runs.january), str(past_runs.march), "--fail-on-drift"])
    assert code == ExitCode.DRIFT == 5
    out, err = capsys.readouterr()
    (days,) = [line for line in out.splitlines() if line.startswith("DAYS_SINCE_LAST")]
    assert days.endswith("DRIFT psi")
    assert err.startswith(f"offerflow: error: {past_runs.march} drifted from {past_runs.january}")
    assert "psi DAYS_SINCE_LAST_TRANSACTION" in err


def test_a_run_compared_with_itself_exits_0(
    past_runs: PastRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(past_runs.march)
    assert main(["compare", run, run, "--fail-on-drift"]) == ExitCode.OK
    assert capsys.readouterr().out.endswith("\nno drift beyond the limits\n")


def test_compare_reads_the_limits_from_the_later_runs_config(
    past_runs: PastRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later = shutil.copytree(past_runs.march, tmp_path / "march")
    manifest = json.loads((later / "run.json").read_text())
    manifest["config"] = {"partner": "default", "drift": {"psi": 5.0}}
    (later / "run.json").write_text(json.dumps(manifest))
    code, figures = _compare(capsys, str(past_runs.january), str(later), "--fail-on-drift")
    assert (code, figures["drifted"], figures["limits_from"]) == (0, False, str(later / "run.json"))


def test_runs_lists_the_newest_first(
    past_runs: PastRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    out = past_runs.march.parent.parent
    assert main(["runs", "--out", str(out), "--partner", "default"]) == ExitCode.OK
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "run",
        "id",
        "status",
        "as",
        "of",
        "members",
        "ok",
        "offers",
        "wall",
        "resumed",
    ]
    assert [line.split()[:3] for line in lines] == [
        ["march", "ok", "2024-03-10"],
        ["january", "ok", "2024-01-10"],
    ]
    assert [line.split()[-1] for line in lines] == ["no", "no"]


def test_runs_as_json_gives_the_figures_as_numbers(
    past_runs: PastRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = json.loads((past_runs.january / "summary.json").read_text())
    assert main(["runs", "--out", str(past_runs.march.parent.parent), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["run_id"] for row in rows] == ["march", "january"]
    assert rows[1] | {"dir": None} == {
        "run_id": "january",
        "partner": "default",
        "status": "ok",
        "as_of": summary["as_of"],
        "members": summary["ledger"]["members_in"],
        "ok": summary["ledger"]["members_by_status"]["ok"],
        "offers": summary["offers_by_type"],
        "wall_s": summary["wall_s"],
        "resumed": False,
        "dir": None,
    }


def test_runs_under_an_empty_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--out", str(tmp_path)]) == ExitCode.OK
    assert capsys.readouterr().out == f"no runs under {tmp_path}\n"


def test_report_writes_report_html_into_the_run_directory(
    past_runs: PastRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = shutil.copytree(past_runs.march, tmp_path / "march")
    assert main(["report", str(run), "--baseline", str(past_runs.january)]) == ExitCode.OK
    assert capsys.readouterr().out == f"wrote {run / 'report.html'}\n"
    assert '<section id="baseline">' in (run / "report.html").read_text()


def test_report_of_a_directory_that_is_no_run_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == ExitCode.USAGE
    assert "not a run directory" in capsys.readouterr().err


def test_every_run_ends_with_its_report_and_a_baseline_adds_the_comparison(
    past_runs: PastRuns, tmp_path: Path
) -> None:
    assert (past_runs.january / "report.html").is_file()
    dag = json.loads((past_runs.january / "summary.json").read_text())["dag"]
    assert dag["offer_inputs"] == ["ats", "resp"]  # the report draws the edges the run had
    assert dag["unscored"] == ["read", "features"]
    assert '<section id="baseline">' not in (past_runs.january / "report.html").read_text()
    manifest = json.loads((past_runs.march / "run.json").read_text())
    data = manifest["config"]["input"]["path"]
    argv = ["run", "--input", data, "--as-of", "2024-03-10", "--out", str(tmp_path)]
    code = main([*argv, "--run-id", "again", "--baseline", str(past_runs.january)])
    assert code == ExitCode.OK
    assert '<section id="baseline">' in (tmp_path / "default" / "again" / "report.html").read_text()


def test_a_baseline_that_is_no_run_exits_2_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = tmp_path / "nowhere"
    assert main(["run", "--out", str(tmp_path), "--baseline", str(nowhere)]) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        f"offerflow: error: --baseline {nowhere}: not a run directory (no summary.json)\n"
    )
    assert list(tmp_path.iterdir()) == []
