"""Whole runs of the offer workflow against the bundled endpoints on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from offerflow.cli import main
from offerflow.config import DEFAULT_FEATURES, PartnerConfig, load_config
from offerflow.errors import (
    ContractError,
    CycleError,
    ExitCode,
    FailureBudgetExceeded,
    InputError,
    UsageError,
)
from offerflow.pipeline import (
    RunReport,
    generate_transactions,
    new_run_dir,
    open_run,
    parse_as_of,
    run_pipeline,
    write_transactions,
)
from offerflow.serving import BundledServer
from tests.faults import FaultServer, Plan
from tests.partner_files import default_document, write_partner
from tests.reference import expected_results

pytestmark = pytest.mark.anyio

AS_OF = "2024-01-10"
OFFERS_COLUMNS = [
    "member_id",
    *DEFAULT_FEATURES,
    "ats_prediction",
    "resp_prediction",
    "offer",
    "status",
    "error",
    "ats_ms",
    "resp_ms",
    "offer_ms",
    "ats_attempts",
    "resp_attempts",
    "offer_attempts",
]
#: a run's tables: each a directory of parts, one per partition
TABLES = ["offers.parquet", "rejects.parquet", "requests.parquet"]
OFFER_ROUTE = "/offer/assign"
#: every attempt of the offer call of about a fifth of the members, drawn per member, is a 404
SOME_OFFERS_FAIL = {
    "seed": 0,
    "routes": {OFFER_ROUTE: [{"fault": "status", "code": 404, "rate": 0.2, "per": "member"}]},
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "members.csv"
    write_transactions(generate_transactions(600, seed=11), path)
    return path


@pytest.fixture(scope="module")
def some_offers_fail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    """The bundled app's routes on 127.0.0.1, with the faults of ``SOME_OFFERS_FAIL``."""
    with FaultServer(SOME_OFFERS_FAIL, tmp_path_factory.mktemp("faults")) as server:
        yield server


def _config(tmp_path: Path, server: BundledServer, data: Path, **changes: Any) -> PartnerConfig:
    document = default_document(server.base_url, data)
    document.update(changes)
    return load_config(write_partner(tmp_path / "partner.yaml", document))


async def _run(config: PartnerConfig, tmp_path: Path, **options: Any) -> RunReport:
    run_dir = new_run_dir(config, tmp_path / "runs", "test")
    return await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of(AS_OF), **options)


def _assert_matches_reference(offers: pl.DataFrame, data: Path) -> None:
    """Every member's row equals the independent computation (floats to 1e-12 relative:
    polars and Python may add in a different order)."""
    _rows_in, expected = expected_results(data, date.fromisoformat(AS_OF))
    assert sorted(offers.get_column("member_id").to_list()) == sorted(expected)
    for row in offers.iter_rows(named=True):
        want = expected[row["member_id"]]
        if want is None:
            assert row["status"] == "no_transactions"
            assert row["ats_prediction"] is None
            assert row["offer"] is None
            continue
        assert row["status"] == "ok", row
        for name, value in want.features.items():
            assert math.isclose(row[name], value, rel_tol=1e-12, abs_tol=1e-12), (name, row)
        assert math.isclose(row["ats_prediction"], want.ats, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(row["resp_prediction"], want.resp, rel_tol=1e-9, abs_tol=1e-12)
        assert row["offer"] == want.offer


async def test_a_run_writes_every_output_file(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, generated), tmp_path)
    assert report.exit_code == ExitCode.OK
    assert report.run_dir == tmp_path / "runs" / "default" / "test"
    names = sorted(p.name for p in report.run_dir.iterdir())
    assert names == [
        ".partitions",
        "offers.csv",
        "offers.parquet",
        "rejects.csv",
        "rejects.parquet",
        "requests.parquet",
        "summary.json",
    ]
    for table in TABLES:  # a dataset of one part: the run's one partition
        assert [p.name for p in (report.run_dir / table).iterdir()] == ["part-00000.parquet"]
    assert [p.name for p in (report.run_dir / ".partitions").iterdir()] == ["part-00000.json"]
    summary = json.loads((report.run_dir / "summary.json").read_text())
    assert summary["ledger"] == report.summary["ledger"]


async def test_both_ledgers_balance_and_every_member_has_one_row(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, generated), tmp_path)
    ledger = report.summary["ledger"]
    assert ledger["rows_in"] == ledger["rows_used"] + ledger["rows_rejected"]
    assert ledger["rows_rejected"] == sum(ledger["rejects_by_reason"].values())
    assert sum(ledger["members_by_status"].values()) == ledger["members_in"]
    tables = open_run(report.run_dir)
    offers = tables.offers.collect()
    assert offers.height == ledger["members_in"]
    assert offers.get_column("member_id").is_unique().all()
    assert tables.rejects.collect().height == ledger["rows_rejected"]
    rejects = pl.read_csv(report.run_dir / "rejects.csv", infer_schema=False)
    assert rejects.height == ledger["rows_rejected"]


async def test_every_member_matches_an_independent_computation(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, generated), tmp_path)
    _assert_matches_reference(open_run(report.run_dir).offers.collect(), generated)


async def test_the_real_job_file_gives_the_known_ledgers_and_results(
    tmp_path: Path, bundled: BundledServer, member_data: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, member_data), tmp_path)
    ledger = report.summary["ledger"]
    assert (ledger["rows_in"], ledger["rows_used"], ledger["rows_rejected"]) == (4335, 4225, 110)
    assert ledger["members_in"] == 990
    assert ledger["members_by_status"] == {"no_transactions": 100, "ok": 890}
    _assert_matches_reference(open_run(report.run_dir).offers.collect(), member_data)


async def test_offers_and_requests_have_the_documented_columns(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, generated), tmp_path)
    tables = open_run(report.run_dir)
    offers = tables.offers.collect()
    assert offers.columns == OFFERS_COLUMNS
    assert pl.read_csv(report.run_dir / "offers.csv").columns == OFFERS_COLUMNS
    requests = tables.requests.collect()
    assert requests.schema["started_at"] == pl.Datetime("us", "UTC")
    assert requests.schema["latency_ms"] == pl.Float64
    assert set(requests.get_column("endpoint")) == {"ats", "resp", "offer"}
    # one row per HTTP attempt: each endpoint's attempts of every member add up to its rows
    for endpoint in ("ats", "resp", "offer"):
        rows = requests.filter(pl.col("endpoint") == endpoint).height
        assert rows == offers.get_column(f"{endpoint}_attempts").sum() > 0


async def test_summary_holds_per_task_metrics(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    report = await _run(_config(tmp_path, bundled, generated), tmp_path)
    summary = json.loads((report.run_dir / "summary.json").read_text())
    ok = summary["ledger"]["members_by_status"]["ok"]
    for task in ("ats", "resp", "offer"):
        metrics = summary["tasks"][task]
        assert metrics["items_out"] == ok
        assert metrics["p50_ms"] <= metrics["p90_ms"] <= metrics["p99_ms"] <= metrics["max_ms"]
    assert summary["endpoints"]["ats"] == {"requests": ok, "errors": 0, "retries": 0}
    assert summary["status"] == "ok"


async def test_an_endpoint_counts_its_retries_and_its_latency_is_its_tasks_only(
    tmp_path: Path, generated: Path
) -> None:
    # every member's first ATS attempt answers 503: as many retries as members, one error each
    rule = {"fault": "status", "code": 503, "attempts": [1]}
    with FaultServer({"routes": {"/ml/ats/predict": [rule]}}, tmp_path) as server:
        document = default_document(server.base_url, generated)
        document["models"][0]["breaker"] = {"failures": 10_000}  # a 503 then a 200, every time
        document["retry_budget"] = {"ratio": 2.0}
        config = load_config(write_partner(tmp_path / "partner.yaml", document))
        report = await _run(config, tmp_path)
    summary = json.loads((report.run_dir / "summary.json").read_text())
    ok = summary["ledger"]["members_by_status"]["ok"]
    assert summary["endpoints"]["ats"] == {"requests": 2 * ok, "errors": ok, "retries": ok}
    assert summary["endpoints"]["resp"] == {"requests": ok, "errors": 0, "retries": 0}
    assert not {"p50_ms", "p99_ms"} & set(summary["endpoints"]["ats"])


async def test_offer_requests_start_while_model_requests_still_run(
    tmp_path: Path, bundled: BundledServer
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(2000, seed=5), data)
    report = await _run(_config(tmp_path, bundled, data), tmp_path)
    requests = (
        open_run(report.run_dir)
        .requests.with_columns(
            finished=pl.col("started_at") + pl.duration(microseconds=pl.col("latency_ms") * 1000)
        )
        .collect()
    )
    first_offer = requests.filter(pl.col("endpoint") == "offer").get_column("started_at").min()
    last_ats = requests.filter(pl.col("endpoint") == "ats").get_column("finished").max()
    assert first_offer < last_ats  # type: ignore[operator]


async def test_a_model_cycle_is_refused_before_any_call(
    tmp_path: Path, some_offers_fail: FaultServer, generated: Path
) -> None:
    document = default_document(some_offers_fail.base_url, generated)
    document["models"][0]["request"] = {"resp": "resp"}
    document["models"][1]["request"] = {"ats": "ats"}
    config = load_config(write_partner(tmp_path / "cycle.yaml", document))
    requests_before = len(some_offers_fail.requests())
    with pytest.raises(CycleError, match="ats") as caught:
        await _run(config, tmp_path)
    assert set(caught.value.tasks) >= {"ats", "resp"}
    assert len(some_offers_fail.requests()) == requests_before  # not even the contract check
    assert not (tmp_path / "runs" / "default" / "test" / "requests.parquet").exists()


async def test_a_model_may_take_another_models_prediction(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    document = default_document(bundled.base_url, generated)
    # a third model: the ATS endpoint again, with RESP's prediction in place of AVG_POINTS_BOUGHT
    chained = {name: name for name in DEFAULT_FEATURES} | {"AVG_POINTS_BOUGHT": "resp"}
    document["models"].append(
        {"name": "ats_on_resp", "url": f"{bundled.base_url}/ml/ats/predict", "request": chained}
    )
    config = load_config(write_partner(tmp_path / "chain.yaml", document))
    report = await _run(config, tmp_path)
    assert report.exit_code == ExitCode.OK
    offers = open_run(report.run_dir).offers.collect()
    _assert_matches_reference(offers.drop("ats_on_resp_prediction", "ats_on_resp_ms"), generated)
    for row in offers.filter(pl.col("status") == "ok").iter_rows(named=True):
        volume = 0.7 * row["LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT"] + 0.3 * row["resp_prediction"]
        weight = max(
            0.0,
            row["PCT_BUY_TRANSACTIONS"]
            + row["PCT_GIFT_TRANSACTIONS"]
            - row["PCT_REDEEM_TRANSACTIONS"],
        )
        assert math.isclose(row["ats_on_resp_prediction"], abs(volume * weight), rel_tol=1e-12)


async def test_a_missing_input_file_is_an_input_error(
    tmp_path: Path, bundled: BundledServer
) -> None:
    config = _config(tmp_path, bundled, tmp_path / "absent.csv")
    with pytest.raises(InputError, match=r"absent\.csv"):
        await _run(config, tmp_path)


async def test_failing_endpoints_fail_members_not_the_run(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    document = default_document(bundled.base_url, generated)
    document["offer"]["url"] = f"{bundled.base_url}/no/such/route"
    config = load_config(write_partner(tmp_path / "broken.yaml", document))
    report = await _run(config, tmp_path)
    assert report.exit_code == ExitCode.MEMBER_FAILURES
    offers = open_run(report.run_dir).offers.collect()
    assert offers.height == report.summary["ledger"]["members_in"]
    failed = offers.filter(pl.col("status") == "model_error")
    assert failed.height == report.summary["ledger"]["members_by_status"]["model_error"] > 0
    assert failed.get_column("ats_prediction").null_count() == 0
    assert failed.get_column("error").str.contains("404").all()


async def test_a_failure_budget_lets_some_failures_pass(
    tmp_path: Path, bundled: BundledServer, generated: Path
) -> None:
    document = default_document(bundled.base_url, generated)
    document["offer"]["url"] = f"{bundled.base_url}/no/such/route"
    document["failure_budget"] = 1.0
    config = load_config(write_partner(tmp_path / "lenient.yaml", document))
    report = await _run(config, tmp_path)
    assert report.exit_code == ExitCode.OK


def _offer_failures(data: Path) -> tuple[int, int]:
    """``(failed, scored)``: the scored members of ``data`` and those whose offer call the plan
    fails, from the reference and the plan alone, not from a run."""
    _rows_in, expected = expected_results(data, date.fromisoformat(AS_OF))
    scored = [member for member, want in expected.items() if want is not None]
    plan = Plan.model_validate(SOME_OFFERS_FAIL)
    failed = sum(plan.choose(OFFER_ROUTE, member, 1) is not None for member in scored)
    assert 0 < failed < len(scored)
    return failed, len(scored)


async def _run_with_budget(
    tmp_path: Path, server: FaultServer, data: Path, budget: float
) -> tuple[RunReport, dict[str, Any]]:
    document = default_document(server.base_url, data)
    document["failure_budget"] = budget
    config = load_config(write_partner(tmp_path / "budget.yaml", document))
    assert config.failure_budget == budget
    report = await _run(config, tmp_path)
    return report, json.loads((report.run_dir / "summary.json").read_text())


async def test_failures_exactly_at_the_failure_budget_pass(
    tmp_path: Path, some_offers_fail: FaultServer, generated: Path
) -> None:
    failed, scored = _offer_failures(generated)

    report, summary = await _run_with_budget(tmp_path, some_offers_fail, generated, failed / scored)

    assert summary["ledger"]["members_by_status"]["model_error"] == failed
    assert (report.exit_code, report.error) == (ExitCode.OK, None)
    assert (summary["status"], summary["exit_code"], summary["error"]) == ("ok", 0, None)


async def test_failures_just_above_the_failure_budget_fail_the_run(
    tmp_path: Path, some_offers_fail: FaultServer, generated: Path
) -> None:
    failed, scored = _offer_failures(generated)
    budget = math.nextafter(failed / scored, 0.0)

    report, summary = await _run_with_budget(tmp_path, some_offers_fail, generated, budget)

    assert summary["ledger"]["members_by_status"]["model_error"] == failed
    assert report.exit_code == ExitCode.MEMBER_FAILURES == 3
    error = report.error
    assert isinstance(error, FailureBudgetExceeded)
    assert (error.failed, error.members, error.budget) == (failed, scored, budget)
    message = f"{failed} of {scored} members failed, above the failure budget of {budget:.2%}"
    assert str(error) == message
    assert (summary["status"], summary["exit_code"], summary["error"]) == ("failed", 3, message)


# Run ids --------------------------------------------------------------------------------------

NOT_RUN_IDS = [
    "../../x",
    "..",
    ".",
    ".hidden",
    "a/b",
    "/abs",
    "a\\b",
    "",
    "-rf",
    "a b",
    "é",
    "x" * 129,
]


@pytest.mark.parametrize("run_id", NOT_RUN_IDS)
def test_a_run_id_that_is_not_one_safe_path_component_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str
) -> None:
    out = tmp_path / "out" / "runs"
    code = main(["run", f"--run-id={run_id}", "--out", str(out)])
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        f"offerflow: error: --run-id: {run_id!r} is not a run id: use 1 to 128 letters, "
        "digits, '.', '_' or '-', starting with a letter or a digit\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_id", NOT_RUN_IDS)
def test_new_run_dir_refuses_a_run_id_that_is_not_one_path_component(
    tmp_path: Path, run_id: str
) -> None:
    with pytest.raises(UsageError, match="is not a run id"):
        new_run_dir(load_config(), tmp_path / "runs", run_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_id", ["20261126T071403Z-18314c", "r", "A.b_c-1", "9..9", "x" * 128])
def test_a_run_id_of_safe_characters_names_a_directory_right_under_the_partners(
    tmp_path: Path, run_id: str
) -> None:
    run_dir = new_run_dir(load_config(), tmp_path / "runs", run_id)
    assert run_dir.parent == tmp_path / "runs" / "default"
    assert run_dir.name == run_id
    assert run_dir.is_dir()


def test_the_default_run_id_is_a_valid_one(tmp_path: Path) -> None:
    run_dir = new_run_dir(load_config(), tmp_path / "runs")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_dir.name)


# Permissions: member data is personal data ------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away (0): whatever a run's files get, it gives them itself."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize(
    ("output", "dir_mode", "file_mode"),
    [({}, 0o700, 0o600), ({"dir_mode": "0750", "file_mode": "0640"}, 0o750, 0o640)],
)
def test_every_directory_and_file_of_a_run_has_the_output_modes_whatever_the_umask(
    tmp_path: Path,
    bundled: BundledServer,
    generated: Path,
    output: dict[str, str],
    dir_mode: int,
    file_mode: int,
) -> None:
    document = default_document(bundled.base_url, generated)
    document["output"].update(output)
    config = write_partner(tmp_path / "partner.yaml", document)
    args = ["run", "--config", str(config), "--out", str(tmp_path / "runs"), "--run-id", "r"]
    assert main([*args, "--as-of", AS_OF]) == ExitCode.OK
    run_dir = tmp_path / "runs" / "default" / "r"
    modes = {
        str(p.relative_to(run_dir)): stat.S_IMODE(p.lstat().st_mode)
        for p in [run_dir, *run_dir.rglob("*")]
    }
    assert modes == {
        **dict.fromkeys([".", ".partitions", *TABLES], dir_mode),
        **dict.fromkeys(
            [
                ".partitions/part-00000.json",
                "offers.csv",
                "offers.parquet/part-00000.parquet",
                "rejects.csv",
                "rejects.parquet/part-00000.parquet",
                "report.html",
                "requests.parquet/part-00000.parquet",
                "run.json",
                "run.log",
                "summary.json",
            ],
            file_mode,
        ),
    }


# Resume: a run runs what its run.json says ---------------------------------------------------

FEATURE_MODULE = """\
import polars as pl


def features(ctx):
    return {"MAX_POINTS_BOUGHT": pl.col("points").max()}
"""


def _cli_run(config: Path, out: Path, *more: str) -> int:
    return main(["run", "--config", str(config), "--out", str(out), "--run-id", "r",
                 "--as-of", AS_OF, *more])  # fmt: skip


def _resume(run_dir: Path, *more: str) -> int:
    return main(["run", "--resume", str(run_dir), *more])


def _summary_of(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary


def test_a_resume_runs_run_jsons_config_with_the_environment_of_its_own_session(
    tmp_path: Path, bundled: BundledServer, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = default_document(bundled.base_url, generated)
    document["offer"]["url"] = "${OFFERFLOW_TEST_OFFER_URL}"
    partner = write_partner(tmp_path / "partner.yaml", document)
    monkeypatch.setenv("OFFERFLOW_TEST_OFFER_URL", f"{bundled.base_url}/no/such/route")
    assert _cli_run(partner, tmp_path) == ExitCode.MEMBER_FAILURES
    run_dir = tmp_path / "default" / "r"
    assert _summary_of(run_dir)["ledger"]["members_by_status"]["model_error"] > 0

    partner.write_text("partner: [no longer a config\n")  # a resume does not read it
    monkeypatch.setenv("OFFERFLOW_TEST_OFFER_URL", f"{bundled.base_url}/offer/assign")
    assert _resume(run_dir) == ExitCode.OK
    assert set(_summary_of(run_dir)["ledger"]["members_by_status"]) == {"ok", "no_transactions"}


def test_a_resume_refuses_a_feature_module_changed_since_the_run_started(
    tmp_path: Path, bundled: BundledServer, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "features.py"
    module.write_text(FEATURE_MODULE)
    document = default_document(bundled.base_url, generated) | {"feature_modules": ["features.py"]}
    assert _cli_run(write_partner(tmp_path / "partner.yaml", document), tmp_path) == ExitCode.OK
    module.write_text(FEATURE_MODULE + "print('not the code the run started with')\n")
    capsys.readouterr()
    assert _resume(tmp_path / "default" / "r") == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"offerflow: error: {module}: feature module changed since run r")
    assert "not the code the run started with" not in err


def test_a_resume_refuses_a_run_json_that_names_another_run(
    tmp_path: Path, bundled: BundledServer, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partner = write_partner(
        tmp_path / "partner.yaml", default_document(bundled.base_url, generated)
    )
    assert _cli_run(partner, tmp_path) == ExitCode.OK
    copy = tmp_path / "default" / "copy"
    copy.mkdir()
    (copy / "run.json").write_bytes((tmp_path / "default" / "r" / "run.json").read_bytes())
    capsys.readouterr()
    assert _resume(copy) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        f"offerflow: error: {copy / 'run.json'}: names run 'r', but its directory is 'copy'\n"
    )
    assert sorted(p.name for p in copy.iterdir()) == ["run.json"]


def test_the_summarys_config_hash_is_run_jsons_fingerprint_in_every_session(
    tmp_path: Path, generated: Path
) -> None:
    # the bundled server and --concurrency change the config the run calls with, not its hash
    partner = write_partner(tmp_path / "partner.yaml", default_document(None, generated))
    assert _cli_run(partner, tmp_path, "--concurrency", "4", "--server-workers", "1") == 0
    run_dir = tmp_path / "default" / "r"
    fingerprint = json.loads((run_dir / "run.json").read_text())["fingerprint"]
    assert _summary_of(run_dir)["config_hash"] == fingerprint == load_config(partner).fingerprint()
    assert _resume(run_dir, "--concurrency", "8", "--server-workers", "1") == ExitCode.OK
    assert _summary_of(run_dir)["config_hash"] == fingerprint


def test_no_file_of_a_run_holds_a_secret_from_the_environment(
    tmp_path: Path, bundled: BundledServer, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-9f8e7d6c5b4a"
    monkeypatch.setenv("OFFERFLOW_TEST_TOKEN", token)
    document = default_document(bundled.base_url, generated)
    for endpoint in [*document["models"], document["offer"]]:
        endpoint["headers"] = {"Authorization": "Bearer ${OFFERFLOW_TEST_TOKEN}"}
    assert _cli_run(write_partner(tmp_path / "p.yaml", document), tmp_path) == ExitCode.OK
    run_dir = tmp_path / "default" / "r"
    assert _resume(run_dir) == ExitCode.OK
    holding = [
        p.name for p in run_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()
    ]
    assert holding == []
    stored = json.loads((run_dir / "run.json").read_text())["config"]
    assert stored["offer"]["headers"] == {"Authorization": "Bearer ${OFFERFLOW_TEST_TOKEN}"}


@pytest.mark.parametrize(
    "flag",
    [
        ("--config", "p.yaml"),
        ("--input", "m.csv"),
        ("--as-of", AS_OF),
        ("--out", "o"),
        ("--run-id", "r2"),
    ],
)
def test_a_resume_refuses_the_settings_of_a_new_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: tuple[str, str]
) -> None:
    assert _resume(tmp_path, *flag) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        f"offerflow: error: --resume takes the run's own settings; drop {flag[0]}\n"
    )


# --- an input the config does not fit, and runs that fail at their start ---------------------


async def test_a_timestamp_format_matching_no_row_stops_the_run_before_any_model_call(
    tmp_path: Path, some_offers_fail: FaultServer, generated: Path
) -> None:
    document = default_document(some_offers_fail.base_url, generated)
    document["input"]["timestamp_format"] = "%d/%m/%Y %H:%M:%S"
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    first_ts = pl.read_csv(generated, infer_schema=False)["lastTransactionUtcTs"].drop_nulls()[0]
    calls_before = len(some_offers_fail.requests())

    with pytest.raises(InputError) as raised:
        await _run(config, tmp_path)

    message = str(raised.value)
    rows = pl.read_csv(generated, infer_schema=False).height
    assert message.startswith(f"{generated}: {rows:,} of {rows:,} rows are rejected (100.0%)")
    assert "above input.max_reject_rate (50.0%)" in message
    assert (
        f"rows bad_timestamp: does input.timestamp_format '%d/%m/%Y %H:%M:%S' match "
        f"'{first_ts}'?" in message
    )
    assert raised.value.exit_code == ExitCode.USAGE
    assert len(some_offers_fail.requests()) == calls_before  # not even the contract check
    summary = json.loads((tmp_path / "runs" / "default" / "test" / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"], summary["error"]) == ("failed", 2, message)
    ledger = summary["ledger"]
    assert (ledger["rows_in"], ledger["rows_used"], ledger["rows_rejected"]) == (rows, 0, rows)


async def test_every_row_after_the_as_of_warns_when_the_limit_allows_it(
    tmp_path: Path, bundled: BundledServer, generated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = default_document(bundled.base_url, generated)
    document["input"]["max_reject_rate"] = 1.0
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    run_dir = new_run_dir(config, tmp_path / "runs", "test")

    with caplog.at_level(logging.WARNING):
        report = await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of("2000-01-01"))

    assert report.exit_code == ExitCode.OK
    assert set(report.summary["ledger"]["members_by_status"]) == {"no_transactions"}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(f"{generated}: no row of ")
    assert "rows future_timestamp: " in warning.getMessage()
    assert "is after the as-of, 2000-01-01 23:59:59 UTC: is --as-of right?" in warning.getMessage()


def _missing_columns(document: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "columns.csv"
    data.write_text("a,b\n1,2\n")
    document["input"]["path"] = str(data)


def _contract_mismatch(document: dict[str, Any], tmp_path: Path) -> None:
    document["offer"]["request"] = {"ats_prediction": "ats", "resp_prediction": "member_id"}


def _cycle(document: dict[str, Any], tmp_path: Path) -> None:
    document["models"][0]["request"] = {"resp": "resp"}
    document["models"][1]["request"] = {"ats": "ats"}


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        (_missing_columns, InputError),
        (_contract_mismatch, ContractError),
        (_cycle, CycleError),
    ],
    ids=["missing columns", "contract mismatch", "cycle"],
)
async def test_a_run_failing_at_its_start_leaves_a_failed_summary_and_logs_the_error(
    tmp_path: Path,
    bundled: BundledServer,
    generated: Path,
    caplog: pytest.LogCaptureFixture,
    spoil: Any,
    error: type[UsageError],
) -> None:
    document = default_document(bundled.base_url, generated)
    spoil(document, tmp_path)
    config = load_config(write_partner(tmp_path / "partner.yaml", document))

    with caplog.at_level(logging.ERROR), pytest.raises(error) as raised:
        await _run(config, tmp_path)

    summary = json.loads((tmp_path / "runs" / "default" / "test" / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"]) == ("failed", ExitCode.USAGE)
    assert summary["error"] == str(raised.value)
    assert (summary["run_id"], summary["partner"]) == ("test", "default")
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"run failed (exit 2): {raised.value}"
