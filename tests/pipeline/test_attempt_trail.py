"""A run's trail of HTTP attempts: each named by X-Request-ID, recorded, and logged if it failed.

One ``offerflow run`` (in-process, through :func:`offerflow.cli.main`) against the fault server:
a share of members get 503 on their first two ATS attempts and an answer on the third; another
share get 503 on every RESP attempt and fail for good. What the server received, what
``requests.parquet`` holds and what ``run.log`` says must agree, attempt by attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from offerflow.cli import main
from offerflow.errors import ExitCode
from tests.faults import POST_ROUTES, FaultServer
from tests.pipeline.matrix import AS_OF, Cli, calls, partner, write_input

pytestmark = pytest.mark.slow

ATS, RESP, _ = POST_ROUTES
RUN_ID = "trail-1"
RETRIES = 2
#: ATS answers a member's third attempt; RESP never answers the members its rule draws
PLAN = {
    "seed": 13,
    "routes": {
        ATS: [{"fault": "status", "code": 503, "rate": 0.3, "per": "member", "attempts": [1, 2]}],
        RESP: [{"fault": "status", "code": 503, "rate": 0.15, "per": "member"}],
    },
}
ENDPOINT = {
    "timeout_s": 2,
    "retries": RETRIES,
    "backoff_initial_s": 0.001,
    "backoff_max_s": 0.01,
    "breaker": {"failures": 10_000},  # every failed attempt is the plan's, none the breaker's
}


@dataclass(frozen=True, slots=True)
class Trail:
    """What one run left: its exit code, its tables and log, and what the server received."""

    exit_code: int
    offers: pl.DataFrame
    requests: pl.DataFrame
    log_lines: list[str]
    received: list[dict[str, Any]]

    def grep(self, text: str) -> list[dict[str, Any]]:
        """The run.log lines holding ``text``, as ``grep text run.log`` finds them, decoded."""
        return [json.loads(line) for line in self.log_lines if text in line]

    def members(self, status: str) -> list[str]:
        return sorted(self.offers.filter(pl.col("status") == status).get_column("member_id"))


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    directory = tmp_path_factory.mktemp("trail")
    data = write_input(directory / "members.csv", 80, seed=1303)
    with FaultServer(PLAN, directory) as server:
        config = partner(
            directory, server.base_url, data, endpoint=ENDPOINT, retry_budget={"ratio": 5.0}
        )
        out = directory / "out"
        args = ["run", "--config", str(config), "--out", str(out), "--run-id", RUN_ID]
        code = main([*args, "--as-of", AS_OF])
        received = calls(server)
    run_dir = out / "default" / RUN_ID
    return Trail(
        code,
        pl.read_parquet(run_dir / "offers.parquet"),
        pl.read_parquet(run_dir / "requests.parquet"),
        (run_dir / "run.log").read_text(encoding="utf-8").splitlines(),
        received,
    )


def _retried_then_ok(trail: Trail) -> list[str]:
    """Members whose ATS call needed all its attempts and who ended ok."""
    ok = trail.offers.filter((pl.col("status") == "ok") & (pl.col("ats_attempts") == RETRIES + 1))
    return sorted(ok.get_column("member_id"))


@pytest.mark.timeout(60)
def test_the_plan_gives_members_that_recover_and_members_that_fail(trail: Trail) -> None:
    assert trail.exit_code == ExitCode.MEMBER_FAILURES
    assert _retried_then_ok(trail)
    assert trail.members("model_error")


@pytest.mark.timeout(60)
def test_every_request_id_received_is_the_request_id_of_a_row_of_requests(trail: Trail) -> None:
    received = sorted(entry["request_id"] for entry in trail.received)
    recorded = sorted(trail.requests.get_column("request_id"))
    assert recorded == received
    assert len(set(recorded)) == len(recorded)  # one id per attempt


@pytest.mark.timeout(60)
def test_a_request_id_names_the_run_the_member_the_endpoint_and_the_attempt(trail: Trail) -> None:
    attempt = pl.col("attempt").cast(pl.String)
    named = pl.concat_str(pl.lit(RUN_ID), "member_id", "endpoint", attempt, separator=":")
    expected = trail.requests.select(named).to_series().to_list()
    assert trail.requests.get_column("request_id").to_list() == expected


@pytest.mark.timeout(60)
def test_a_recovered_member_has_its_attempts_numbered_and_only_its_failures_logged(
    trail: Trail,
) -> None:
    member = _retried_then_ok(trail)[0]
    ats = trail.requests.filter((pl.col("member_id") == member) & (pl.col("endpoint") == "ats"))
    assert ats.sort("attempt").select("attempt", "status").rows() == [(1, 503), (2, 503), (3, 200)]
    lines = [line for line in trail.grep(member) if line["endpoint"] == "ats"]
    assert [(line["level"], line["attempt"], line["outcome"]) for line in lines] == [
        ("WARNING", 1, "HTTP 503"),
        ("WARNING", 2, "HTTP 503"),
    ]
    assert [line["request_id"] for line in lines] == [f"{RUN_ID}:{member}:ats:{n}" for n in (1, 2)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", [0, -1])
def test_grep_finds_every_attempt_of_a_failed_member_with_its_outcome(
    trail: Trail, which: int
) -> None:
    member = trail.members("model_error")[which]
    failed = (
        trail.requests.filter((pl.col("member_id") == member) & pl.col("error").is_not_null())
        .sort("endpoint", "attempt")
        .select("endpoint", "attempt", "status", "request_id")
        .rows()
    )
    lines = trail.grep(member)
    assert all(line["member_id"] == member for line in lines)
    assert sorted(
        (line["endpoint"], line["attempt"], line["outcome"], line["request_id"]) for line in lines
    ) == [(endpoint, n, f"HTTP {status}", rid) for endpoint, n, status, rid in failed]
    resp = [(line["level"], line["attempt"]) for line in lines if line["endpoint"] == "resp"]
    assert resp == [("WARNING", 1), ("WARNING", 2), ("ERROR", 3)]
    assert {line["level"] for line in lines} <= {"WARNING", "ERROR"}


@pytest.mark.timeout(60)
def test_a_run_logs_no_line_for_an_attempt_that_answered(trail: Trail) -> None:
    logged = {line["request_id"] for line in map(json.loads, trail.log_lines) if "attempt" in line}
    answered = trail.requests.filter(pl.col("error").is_null()).get_column("request_id")
    assert logged.isdisjoint(answered)
    failed = trail.requests.filter(pl.col("error").is_not_null()).get_column("request_id")
    assert logged == set(failed)


@pytest.mark.timeout(90)
def test_failed_attempts_stay_off_the_console_unless_verbose(tmp_path: Path) -> None:
    data = write_input(tmp_path / "members.csv", 10, seed=1304)
    plan = {"routes": {RESP: [{"fault": "status", "code": 503, "attempts": [1]}]}}
    cli = Cli(tmp_path)
    try:
        with FaultServer(plan, tmp_path) as server:
            config = partner(tmp_path, server.base_url, data, endpoint=ENDPOINT)
            for run_id, verbose in (("quiet", ()), ("verbose", ("-v",))):
                args = ["run", "--config", str(config), "--out", str(tmp_path / "out")]
                code = cli.run(*verbose, *args, "--run-id", run_id, "--as-of", AS_OF)
                assert code == ExitCode.OK, cli.stderr()
        console = cli.stderr().split("run directory: ")
    finally:
        cli.close()
    logged = (tmp_path / "out" / "default" / "quiet" / "run.log").read_text()
    assert logged.count("resp attempt 1 for member ") > 0
    assert "resp attempt 1 for member " not in console[0]
    assert console[1].count("resp attempt 1 for member ") == logged.count("resp attempt 1 for ")
