"""The ``offerflow`` command: its commands, its errors and its exit codes."""

from __future__ import annotations

import gc
import gzip
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from offerflow import cli
from offerflow.cli import main
from offerflow.cli.run import no_collections
from offerflow.config import DEFAULT_CONFIG, load_config
from offerflow.errors import ExitCode
from offerflow.pipeline import generate_transactions, read_input, write_transactions
from offerflow.serving import BundledServer
from tests.partner_files import default_document, write_partner
from tests.pipeline.inputs.test_timezones import assert_same_instants
from tests.reference import expected_results

#: the default partner's tasks, in the order ``validate`` prints them
TASKS = ("read", "features", "unscored", "ats", "resp", "offer_inputs", "offer", "record")


class _Counting(BaseHTTPRequestHandler):
    """Counts every request; answers 404 (final, never retried), so no call passes unnoticed."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.path)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that records the paths it was asked for."""
    _Counting.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Counting.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    assert main(["generate-data", "--members", "150", "--seed", "3", "--out", str(path)]) == 0
    return path


def test_generated_data_in_a_partners_local_times_reads_as_the_utc_data(tmp_path: Path) -> None:
    document = default_document(input_path=tmp_path / "local.csv")
    document["input"].update(timezone="America/Chicago", timestamp_format="%m/%d/%Y %H:%M:%S")
    config = write_partner(tmp_path / "chicago.yaml", document)
    args = ["generate-data", "--members", "60", "--seed", "4", "--config", str(config)]
    assert main([*args, "--out", str(tmp_path / "local.csv")]) == 0
    plain = tmp_path / "utc.csv"
    assert main(["generate-data", "--members", "60", "--seed", "4", "--out", str(plain)]) == 0
    assert (tmp_path / "local.csv").read_bytes() != plain.read_bytes()
    as_of = datetime(2024, 1, 10, 23, 59, 59, tzinfo=UTC)
    local = read_input(load_config(config), as_of)
    utc_config = write_partner(tmp_path / "utc.yaml", default_document(input_path=plain))
    utc = read_input(load_config(utc_config), as_of)
    assert local.rows_used == utc.rows_used > 100
    assert_same_instants(local.transactions, utc.transactions, "America/Chicago")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    usage, *blocks = out.split("\n\n")
    (section,) = [block for block in blocks if block.startswith("commands:")]
    commands = {
        "run": "run the offer pipeline for one partner",
        "serve-models": "serve the bundled model endpoints",
        "generate-data": "write a synthetic transactions file",
        "dag": "draw a partner's workflow",
        "validate": "check a partner config without running it",
        "report": "write a run's report.html",
        "runs": "list past runs, newest first",
        "compare": "compare a run with a baseline run: drift, offer mix, latency, ledgers",
    }
    words = ["commands:", "COMMAND", *(f"{name} {text}" for name, text in commands.items())]
    # compared word by word: the terminal's width decides where argparse wraps
    assert " ".join(usage.split()) == (
        "usage: offerflow [-h] [--version] [-v] [--log-level {debug,info,warning,error}] "
        "[--log-format {text,json}] COMMAND ..."
    )
    assert " ".join(section.split()) == " ".join(words)


def test_help_does_not_import_the_heavy_libraries() -> None:
    code = (
        "import json, sys; from offerflow.cli import main; print(json.dumps(sorted(sys.modules)))"
    )
    modules = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
    )
    assert "offerflow.cli" in modules
    assert sorted(modules & {"polars", "aiohttp", "fastapi", "uvicorn"}) == []


def test_the_command_exits_with_mains_code_and_its_objects_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "main", lambda: ExitCode.MEMBER_FAILURES)
    try:
        with pytest.raises(SystemExit) as caught:
            cli.entry()
        assert caught.value.code == ExitCode.MEMBER_FAILURES
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_python_m_offerflow_exits_with_the_commands_code(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "offerflow", "validate", str(missing)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == f"offerflow: error: {missing}: config file not found\n"


def test_the_collector_is_paused_within_no_collections_and_restored_after() -> None:
    assert gc.isenabled()
    with no_collections():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with no_collections():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_the_serving_package_leaves_urllib_request_unimported() -> None:
    code = "import sys, offerflow.serving; print('urllib.request' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip() == "False"


def test_generate_data_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (first, second):
        assert main(["generate-data", "--members", "50", "--seed", "9", "--out", str(path)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert pl.read_csv(first).get_column("memberId").n_unique() >= 45


def test_validate_accepts_the_default_partner(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEFAULT_CONFIG)]) == ExitCode.OK
    tasks = " → ".join(TASKS)
    assert capsys.readouterr().out.splitlines() == [
        f"input {DEFAULT_CONFIG.parent / 'default_members.csv'}: 4,954 of 5,093 rows usable, "
        "rejected: missing_field:ts 129, missing_member_id 10 (each file's first 10,000 rows "
        "at most)",
        f"{DEFAULT_CONFIG}: ok — partner 'default', tasks: {tasks}",
    ]


def _wrong_columns(document: dict[str, Any], tmp_path: Path) -> str:
    data = tmp_path / "columns.csv"
    data.write_text("a,b\n1,2\n")
    document["input"]["path"] = str(data)
    return f"offerflow: error: {data}:1: missing column(s) 'memberId', "


def _timestamps_otherwise(document: dict[str, Any], tmp_path: Path) -> str:
    document["input"]["timestamp_format"] = "%d/%m/%Y %H:%M:%S"
    return (
        "offerflow: error: {path}: in a sample (each file's first 10,000 rows), 5,093 of 5,093 "
        "rows are rejected (100.0%), above input.max_reject_rate (50.0%):"
    )


@pytest.mark.parametrize("spoil", [_wrong_columns, _timestamps_otherwise], ids=["columns", "ts"])
def test_validate_checks_the_input_as_a_run_would_and_prints_no_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil: Any
) -> None:
    document = default_document()
    expected = spoil(document, tmp_path).format(path=document["input"]["path"])
    path = write_partner(tmp_path / "partner.yaml", document)

    assert main(["validate", str(path)]) == ExitCode.USAGE

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(expected)


def test_validate_checks_endpoints_after_the_input_and_prints_ok_last(
    tmp_path: Path, bundled: BundledServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_partner(tmp_path / "p.yaml", default_document(bundled.base_url))
    assert main(["validate", str(path), "--check-endpoints"]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["input", str(DEFAULT_CONFIG.parent / "default_members.csv") + ":"],
        ["endpoints", "checked:"],
        [f"{path}:", "ok"],
    ]


def test_validate_prints_no_ok_when_the_endpoints_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        path = write_partner(tmp_path / "p.yaml", default_document(base_url))
        assert main(["validate", str(path), "--check-endpoints"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert ": ok" not in captured.out
    assert captured.err.startswith("offerflow: error: endpoints could not be reached:")


def test_validate_checks_the_input_before_asking_the_endpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = default_document("http://127.0.0.1:9")
    expected = _wrong_columns(document, tmp_path)
    path = write_partner(tmp_path / "p.yaml", document)
    assert main(["validate", str(path), "--check-endpoints"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert (captured.out, captured.err.startswith(expected)) == ("", True)


def test_validate_names_an_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = default_document()
    document["offer"]["reponse_field"] = "offer"
    path = write_partner(tmp_path / "typo.yaml", document)
    assert main(["validate", str(path)]) == ExitCode.USAGE
    (line,) = [n for n, text in enumerate(path.read_text().splitlines(), 1) if "reponse" in text]
    assert capsys.readouterr().err.splitlines() == [
        f"offerflow: error: {path}, key 'offer.reponse_field': invalid config:",
        f"  line {line}, key 'offer.reponse_field': unknown key (did you mean 'response_field'?)",
    ]


def test_validate_names_an_unknown_feature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = default_document()
    document["features"] = [*document["features"][:-1], "DAYS_SINCE_LAST_TRANSACTON"]
    path = write_partner(tmp_path / "feature.yaml", document)
    assert main(["validate", str(path)]) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "offerflow: error: key 'features': unknown feature 'DAYS_SINCE_LAST_TRANSACTON'; "
        "did you mean 'DAYS_SINCE_LAST_TRANSACTION' or 'DAYS_SINCE_FIRST_TRANSACTION' "
        "or 'PCT_GIFT_TRANSACTIONS'?\n"
    )


def test_a_cycle_exits_2_naming_it_before_any_model_call(
    tmp_path: Path,
    counting_server: tuple[str, list[str]],
    small_input: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, seen = counting_server
    document = default_document(base_url, small_input)
    document["models"][0]["request"] = {"resp": "resp"}
    document["models"][1]["request"] = {"ats": "ats"}
    path = write_partner(tmp_path / "cycle.yaml", document)
    code = main(["run", "--config", str(path), "--out", str(tmp_path / "runs")])
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == "offerflow: error: tasks form a cycle: ats -> resp -> ats\n"
    assert seen == []


def test_an_unknown_key_exits_2_before_any_model_call(
    tmp_path: Path, counting_server: tuple[str, list[str]], small_input: Path
) -> None:
    base_url, seen = counting_server
    document = default_document(base_url, small_input)
    document["models"][0]["concurency"] = 8
    path = write_partner(tmp_path / "typo.yaml", document)
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert seen == []


def test_an_unwritable_output_exits_4_before_any_model_call(
    tmp_path: Path, counting_server: tuple[str, list[str]], small_input: Path
) -> None:
    base_url, seen = counting_server
    path = write_partner(tmp_path / "p.yaml", default_document(base_url, small_input))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--config", str(path), "--out", str(blocker)]) == ExitCode.OUTPUT
    assert seen == []


def test_bad_input_is_found_before_the_bundled_server_starts_and_leaves_a_record(
    tmp_path: Path,
) -> None:
    data = tmp_path / "members.csv"
    data.write_text("a,b\n1,2\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "offerflow",
            "run",
            "--input",
            str(data),
            "--out",
            str(tmp_path),
            "--run-id",
            "r",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == ExitCode.USAGE
    error = f"{data}:1: missing column(s) 'memberId', "
    assert result.stderr.startswith(f"offerflow: error: {error}")
    assert result.stderr.count(error) == 1  # printed once: the log record is the run log's
    run_dir = tmp_path / "default" / "r"
    records = [json.loads(line) for line in (run_dir / "run.log").read_text().splitlines()]
    assert [(r["level"], r["message"][:60]) for r in records] == [
        ("ERROR", f"run failed (exit 2): {error}"[:60])
    ]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"]) == ("failed", ExitCode.USAGE)
    assert summary["error"].startswith(error)


def test_a_compressed_input_cut_short_stops_the_run_before_any_call_naming_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(50, seed=3), data)
    packed = gzip.compress(data.read_bytes())
    cut = tmp_path / "members.csv.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    argv = ["run", "--input", str(cut), "--out", str(tmp_path), "--run-id", "r"]
    assert main(argv) == ExitCode.USAGE
    summary = json.loads((tmp_path / "default" / "r" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith(f"{cut}: cannot decompress the file: ")
    assert not (tmp_path / "default" / "r" / "requests.parquet").exists()


def test_too_many_rejects_stop_the_run_before_the_server_and_the_summary_keeps_the_ledger(
    tmp_path: Path, small_input: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = default_document(input_path=small_input)  # bundled endpoints
    document["input"]["timestamp_format"] = "%d/%m/%Y %H:%M:%S"
    path = write_partner(tmp_path / "p.yaml", document)
    rows = pl.read_csv(small_input).height

    code = main(["run", "--config", str(path), "--out", str(tmp_path), "--run-id", "r"])

    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(
        f"offerflow: error: {small_input}: {rows:,} of {rows:,} rows are rejected"
    )
    assert "bad_timestamp: does input.timestamp_format '%d/%m/%Y %H:%M:%S' match '" in err
    run_dir = tmp_path / "default" / "r"
    log_text = (run_dir / "run.log").read_text()
    assert "bundled model server" not in log_text
    ledger = json.loads((run_dir / "summary.json").read_text())["ledger"]
    assert (ledger["rows_in"], ledger["rows_used"], ledger["rows_rejected"]) == (rows, 0, rows)
    assert sum(ledger["rejects_by_reason"].values()) == rows


def test_a_contract_mismatch_leaves_a_failed_summary_and_an_error_in_the_run_log(
    tmp_path: Path, bundled: BundledServer, small_input: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = default_document(bundled.base_url, small_input)
    document["offer"]["request"] = {"ats_prediction": "ats", "resp_prediction": "member_id"}
    path = write_partner(tmp_path / "p.yaml", document)

    code = main(["run", "--config", str(path), "--out", str(tmp_path), "--run-id", "r"])

    assert code == ExitCode.USAGE
    run_dir = tmp_path / "default" / "r"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"]) == ("failed", ExitCode.USAGE)
    assert summary["error"].startswith("endpoint contracts do not match the config:\n  offer: ")
    assert capsys.readouterr().err.startswith(f"offerflow: error: {summary['error']}")
    records = [json.loads(line) for line in (run_dir / "run.log").read_text().splitlines()]
    assert (records[-1]["level"], records[-1]["message"]) == (
        "ERROR",
        f"run failed (exit 2): {summary['error']}",
    )


def test_generate_data_to_an_unknown_suffix_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "members.json"
    with pytest.raises(SystemExit) as caught:
        main(["generate-data", "--members", "3", "--out", str(out)])
    assert caught.value.code == ExitCode.USAGE
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"offerflow generate-data: error: argument --out: {out}: the suffix says the format: "
        ".csv or .parquet"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("nowhere/members.csv", "{tmp}/nowhere: no such directory"),
        ("folder.csv", "{tmp}/folder.csv: cannot write: "),
    ],
    ids=["missing directory", "a directory"],
)
def test_generate_data_that_cannot_write_exits_4_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, message: str
) -> None:
    (tmp_path / "folder.csv").mkdir()
    code = main(["generate-data", "--members", "3", "--out", str(tmp_path / out)])
    assert code == ExitCode.OUTPUT
    assert capsys.readouterr().err.startswith(f"offerflow: error: {message.format(tmp=tmp_path)}")


def test_serve_models_on_a_port_in_use_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve-models", "--port", str(port)]) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        f"offerflow: error: cannot bind 127.0.0.1:{port}: Address already in use (port 0 picks "
        "a free one)\n"
    )


def test_serve_models_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve-models", "--port", "70000"])
    assert caught.value.code == ExitCode.USAGE
    assert "70000 is not a port (0 to 65535" in capsys.readouterr().err


def test_a_bad_as_of_exits_2(tmp_path: Path) -> None:
    assert main(["run", "--as-of", "10/01/2024", "--out", str(tmp_path)]) == ExitCode.USAGE


def test_failing_endpoints_exit_3_with_every_member_recorded(
    tmp_path: Path, counting_server: tuple[str, list[str]], small_input: Path
) -> None:
    base_url, seen = counting_server
    path = write_partner(tmp_path / "p.yaml", default_document(base_url, small_input))
    code = main(["run", "--config", str(path), "--out", str(tmp_path), "--run-id", "r"])
    assert code == ExitCode.MEMBER_FAILURES
    summary = json.loads((tmp_path / "default" / "r" / "summary.json").read_text())
    assert summary["exit_code"] == ExitCode.MEMBER_FAILURES
    by_status = summary["ledger"]["members_by_status"]
    assert sum(by_status.values()) == summary["ledger"]["members_in"]
    assert by_status["model_error"] > 0
    assert len(seen) == 2 * by_status["model_error"]  # ats and resp, once each: 404 is final


def test_run_with_real_urls_uses_them_and_writes_a_run_log(
    tmp_path: Path, bundled: BundledServer, small_input: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_partner(tmp_path / "p.yaml", default_document(bundled.base_url, small_input))
    code = main(["run", "--config", str(path), "--out", str(tmp_path), "--run-id", "r1"])
    assert code == ExitCode.OK
    run_dir = tmp_path / "default" / "r1"
    records = [json.loads(line) for line in (run_dir / "run.log").read_text().splitlines()]
    assert [sorted(r) for r in records] == [["level", "logger", "message", "run_id", "ts"]] * (
        len(TASKS) + 3
    )
    assert {(r["run_id"], r["level"]) for r in records} == {("r1", "INFO")}
    assert all(datetime.fromisoformat(r["ts"]).tzinfo is not None for r in records)
    messages = [r["message"] for r in records]
    assert messages[0] == "workflow 'offers:default': run started, 8 tasks"
    assert sorted(messages[1:-2]) == sorted(f"task {task} finished" for task in TASKS)
    assert re.fullmatch(r"workflow 'offers:default': run finished in \d+\.\d{3} s", messages[-2])
    assert re.fullmatch(r"report\.html written in \d+\.\d{2} s", messages[-1])
    assert (run_dir / "report.html").is_file()
    assert capsys.readouterr().err.splitlines()[-1] == f"run directory: {run_dir}"


def test_log_lines_on_stderr_follow_the_level_and_format_asked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "offerflow", "--log-level", "info", "--log-format", "json",
         "run", "--server-workers", "1", "--run-id", "r"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert {r["level"] for r in records} == {"INFO"}
    assert "workflow 'offers:default': run started, 8 tasks" in [r["message"] for r in records]
    # the final table and the run directory are printed, not logged
    assert lines[-1] == "run directory: runs/default/r"
    quiet = subprocess.run(
        [sys.executable, "-m", "offerflow", "--log-level", "error", "run", "--server-workers",
         "1", "--run-id", "q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert " INFO " not in quiet.stderr
    assert "{" not in quiet.stderr


def test_run_with_no_arguments_starts_and_stops_the_bundled_server(tmp_path: Path) -> None:
    """`offerflow run` as a newcomer types it, in a fresh working directory."""
    result = subprocess.run(
        [sys.executable, "-m", "offerflow", "run", "--server-workers", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "default").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    as_of = datetime.fromisoformat(summary["as_of"]).date()
    _rows, expected = expected_results(DEFAULT_CONFIG.parent / "default_members.csv", as_of)
    unscored = sum(want is None for want in expected.values())
    assert summary["ledger"]["members_by_status"] == {
        "no_transactions": unscored,
        "ok": len(expected) - unscored,
    }
    port = int(re.search(r"bundled model server at http://127\.0\.0\.1:(\d+)", result.stderr)[1])  # type: ignore[index]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def _file_size_limit(limit: int) -> Callable[[], None]:
    """For a child: files may not grow past ``limit`` bytes (EFBIG, as a full disk would)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_failing_mid_run_exits_4_naming_the_path_and_keeps_committed_chunks(
    tmp_path: Path, bundled: BundledServer
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(1500, seed=4), data)
    document = default_document(bundled.base_url, data)
    document["output"]["chunk_rows"] = 100  # chunks of ~10 kB commit; offers.parquet cannot
    path = write_partner(tmp_path / "p.yaml", document)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "offerflow",
            "run",
            "--config",
            str(path),
            "--out",
            str(tmp_path),
            "--run-id",
            "r",
            "--as-of",
            "2024-01-10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_file_size_limit(40_000),
    )
    assert result.returncode == ExitCode.OUTPUT, result.stderr
    run_dir = tmp_path / "default" / "r"
    # the rest of the line is the parquet writer's own words for EFBIG
    error = f"offerflow: error: {run_dir / 'offers.parquet' / 'part-00000.parquet'}: cannot write: "
    assert result.stderr.splitlines()[-1].startswith(error)
    parts = sorted((run_dir / ".parts" / "p00000").glob("offers-*.parquet"))
    assert len(parts) > 1
    committed = pl.concat([pl.read_parquet(part) for part in parts])
    assert committed.get_column("member_id").is_unique().all()
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (run_dir / "offers.parquet" / "part-00000.parquet").exists()


def test_dag_draws_the_default_partners_workflow_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dag"]) == ExitCode.OK
    assert capsys.readouterr().out.splitlines() == [
        "workflow offers:default: 8 tasks",
        "  read          step",
        "  features      step    <- read",
        "  unscored      step    <- read, features",
        "  ats           stream  <- features",
        "  resp          stream  <- features",
        "  offer_inputs  join    <- ats, resp",
        "  offer         stream  <- offer_inputs",
        "  record        stream  <- offer",
    ]


def test_dag_as_mermaid_has_a_node_per_task_and_an_edge_per_dependency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dag", "--format", "mermaid", "--config", str(DEFAULT_CONFIG)]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = [line.strip() for line in lines[1:9]]
    assert nodes[0] == 't0["read"]'  # a step is a box
    assert nodes[3] == 't3(["ats"])'  # a stream a stadium
    assert nodes[5] == 't5{{"offer_inputs"}}'  # a join a hexagon
    edges = {line.strip() for line in lines[9:]}
    assert edges == {
        "t0 --> t1", "t0 --> t2", "t1 --> t2", "t1 --> t3", "t1 --> t4",
        "t3 --> t5", "t4 --> t5", "t5 --> t6", "t6 --> t7",
    }  # fmt: skip


def test_a_cycle_among_models_is_named_by_dag_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small_input: Path
) -> None:
    document = default_document("http://127.0.0.1:9", small_input)
    document["models"][0]["request"] = {"resp": "resp"}
    document["models"][1]["request"] = {"ats": "ats"}
    path = write_partner(tmp_path / "p.yaml", document)
    assert main(["dag", "--config", str(path)]) == ExitCode.USAGE
    assert capsys.readouterr().err == "offerflow: error: tasks form a cycle: ats -> resp -> ats\n"
