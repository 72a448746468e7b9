"""The fault matrix: whole runs against a fault-injecting model server, each ending whole.

Each scenario runs the pipeline (in-process, or the ``offerflow`` command in a child process)
against :class:`~tests.faults.FaultServer` on 127.0.0.1 with one kind of fault, once per module,
and the tests below it state what the run must show. Whatever the fault, every scenario ends
with :func:`~tests.pipeline.matrix.assert_whole`: no member lost, none doubled, every output file
readable, both ledgers balanced. Runs are small (a few hundred members, sub-second timeouts) and
bounded in time by pytest-timeout alone; the figures they measure (ok shares, calls, gaps,
latencies) are reported through ``matrix.report`` and printed in a table at the end of the
module under ``pytest -s``.

How a run ended is read from its exit code, its output files and its ``run.log``, never from
a clock. Only two scenarios compare a time, because a time is what they test: the wait that a
``Retry-After`` asks for or its clamp imposes (2), and the timeout that cuts a hung attempt (4),
each between the bound it must respect and a stated slack.
"""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerflow.config import DEFAULT_COLUMNS, load_config
from offerflow.errors import ExitCode
from offerflow.pipeline import RunReport, Shutdown, parse_as_of, read_transactions
from offerflow.serving import BundledServer
from tests.faults import POST_ROUTES, FaultServer, Plan
from tests.pipeline.matrix import (
    AS_OF,
    FIGURES,
    Cli,
    Whole,
    assert_whole,
    calls,
    input_members,
    log_messages,
    mark,
    partner,
    report,
    run,
    wait_until,
    write_input,
)

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

ATS, RESP, OFFER = POST_ROUTES
#: endpoint settings of most scenarios: sub-second timeouts, short backoffs
FAST = {"timeout_s": 0.5, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}
RUN_ID = "r"


@pytest.fixture(scope="module", autouse=True)
def figures_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: the measured figures, logged at DEBUG and printed under ``-s``."""
    yield
    if not FIGURES:
        return
    width = max(len(scenario) for scenario, _, _ in FIGURES)
    lines = [f"{scenario:<{width}}  {figure}: {value}" for scenario, figure, value in FIGURES]
    table = "fault matrix figures:\n" + "\n".join(lines)
    log.debug("%s", table)
    if request.config.getoption("capture") == "no":
        print("\n" + table)


def _scored(data: Path) -> int:
    """Members of an input with at least one usable transaction: each needs 3 calls."""
    result = read_transactions(data, as_of=parse_as_of(AS_OF))
    return result.transactions.get_column("member_id").n_unique()


def _run_args(config: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("run", "--config", str(config), "--out", str(out), "--run-id", RUN_ID,
            "--as-of", AS_OF, *more)  # fmt: skip


def _resume_args(run_dir: Path, *more: str) -> tuple[str, ...]:
    return ("run", "--resume", str(run_dir), *more)


# 1. A share of calls fail with 500 ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One in-process run against a fault server: its outputs and what the server saw."""

    whole: Whole
    report: RunReport
    seen_calls: list[dict[str, Any]]
    data: Path


@pytest.fixture(scope="module")
def five_hundreds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """1000 members; 10% of all calls, drawn per call, answer 500.

    Three retries, not the default two: with two, ~0.3% of members fail all three attempts of
    some call, too close to the 0.5% the scenario allows for its outcome to be more than a draw.
    """
    directory = tmp_path_factory.mktemp("five-hundreds")
    data = write_input(directory / "members.csv", 1000, seed=101)
    plan = {"seed": 1, "routes": {"*": [{"fault": "status", "code": 500, "rate": 0.1}]}}
    with FaultServer(plan, directory) as server:
        config = partner(directory, server.base_url, data, endpoint={**FAST, "retries": 3})
        result = anyio.run(run, config, directory / "run")
        yield Outcome(assert_whole(result.run_dir, data), result, calls(server), data)


@pytest.mark.timeout(60)
def test_10pct_500s_leave_at_least_99_5pct_of_scored_members_ok(five_hundreds: Outcome) -> None:
    whole = five_hundreds.whole
    ok_share = whole.by_status.get("ok", 0) / whole.scored
    report("1 500s@10%", "ok share of scored members", f"{ok_share:.2%} of {whole.scored}")
    assert ok_share >= 0.995


@pytest.mark.timeout(60)
def test_10pct_500s_cost_at_most_1_2x_the_calls_needed(five_hundreds: Outcome) -> None:
    needed = 3 * five_hundreds.whole.scored
    seen = len(five_hundreds.seen_calls)
    report("1 500s@10%", "calls seen / needed", f"{seen} / {needed} = {seen / needed:.3f}")
    assert seen <= 1.2 * needed


@pytest.mark.timeout(60)
def test_every_call_the_server_saw_is_a_row_of_requests(five_hundreds: Outcome) -> None:
    requests = five_hundreds.whole.requests
    assert requests.height == len(five_hundreds.seen_calls)
    assert requests.filter(pl.col("status") == 500).height == sum(
        1 for r in five_hundreds.seen_calls if r["fault"] == "status"
    )


# 2. Retry-After ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """A run where a share of members met 503 with Retry-After on their first ATS attempt."""

    outcome: Outcome
    asked_s: float
    clamp_s: float
    #: per such member: seconds between its first and second ATS attempt, as the server saw them
    gaps: dict[str, float]


def _retry_after(directory: Path, asked: str, clamp_s: float, rate: float) -> Iterator[RetryAfter]:
    data = write_input(directory / "members.csv", 300, seed=202)
    rule = {"fault": "status", "code": 503, "retry_after": asked, "rate": rate}
    plan = {"seed": 2, "routes": {ATS: [{**rule, "per": "member", "attempts": [1]}]}}
    endpoint = {**FAST, "retry_after_max_s": clamp_s}
    with FaultServer(plan, directory) as server:
        config = partner(directory, server.base_url, data, endpoint=endpoint)
        result = anyio.run(run, config, directory / "run")
        attempts: dict[str, list[dict[str, Any]]] = {}
        for entry in server.requests_for(path=ATS):
            attempts.setdefault(entry["member"], []).append(entry)
        gaps = {
            member: entries[1]["t"] - entries[0]["t"]
            for member, entries in attempts.items()
            if entries[0]["fault"] == "status" and len(entries) > 1
        }
        told = sum(1 for entries in attempts.values() if entries[0]["fault"] == "status")
        assert told == len(gaps) > 0, "every member told to wait must come back, and some were"
        outcome = Outcome(assert_whole(result.run_dir, data), result, calls(server), data)
        yield RetryAfter(outcome, float(asked), clamp_s, gaps)


@pytest.fixture(scope="module")
def retry_after_1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetryAfter]:
    """300 members; 15% of them get 503 with ``Retry-After: 1`` on their first ATS attempt."""
    yield from _retry_after(tmp_path_factory.mktemp("retry-after-1"), "1", 30.0, 0.15)


@pytest.fixture(scope="module")
def retry_after_clamped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetryAfter]:
    """As ``retry_after_1`` for 5% of members, asking 3600 s while the clamp is 1.5 s."""
    yield from _retry_after(tmp_path_factory.mktemp("retry-after-3600"), "3600", 1.5, 0.05)


@pytest.mark.timeout(60)
def test_the_next_attempt_waits_at_least_retry_after(retry_after_1: RetryAfter) -> None:
    gaps = retry_after_1.gaps
    report("2 Retry-After: 1", "members told to wait", len(gaps))
    report(
        "2 Retry-After: 1",
        "gap min / max s",
        f"{min(gaps.values()):.3f} / {max(gaps.values()):.3f}",
    )
    short = {member: gap for member, gap in gaps.items() if gap < retry_after_1.asked_s}
    assert not short


# The slack a clamped wait may take beyond the clamp: the 503's answer and the scheduling of one
# attempt. Generous, yet 3 orders of magnitude below the 3600 s asked for.
CLAMP_SLACK_S = 1.0


@pytest.mark.timeout(60)
def test_a_retry_after_above_the_clamp_waits_the_clamp(retry_after_clamped: RetryAfter) -> None:
    gaps, clamp = retry_after_clamped.gaps, retry_after_clamped.clamp_s
    report("2 Retry-After: 3600", "members told to wait", len(gaps))
    report("2 Retry-After: 3600", f"gap min / max s (clamp {clamp:g})",
           f"{min(gaps.values()):.3f} / {max(gaps.values()):.3f}")  # fmt: skip
    assert all(clamp <= gap <= clamp + CLAMP_SLACK_S for gap in gaps.values()), gaps


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", ["retry_after_1", "retry_after_clamped"])
def test_members_told_to_retry_after_end_ok(scenario: str, request: pytest.FixtureRequest) -> None:
    case: RetryAfter = request.getfixturevalue(scenario)
    whole = case.outcome.whole
    assert case.outcome.report.exit_code == ExitCode.OK
    assert set(case.gaps) <= whole.members("ok")
    assert whole.by_status.get("ok", 0) == whole.scored


# 3. The endpoint refuses connections, then comes back ---------------------------------------


@dataclass(slots=True)
class Sessions:
    """A CLI run, then ``--resume`` of it: exit codes, outputs, and the server's log marks."""

    data: Path
    run_dir: Path
    server: FaultServer
    exit_codes: list[int] = field(default_factory=list)
    wholes: list[Whole] = field(default_factory=list)
    #: index of the server's log at which each session began
    marks: list[int] = field(default_factory=list)

    def session(self, cli: Cli, *args: str) -> None:
        """Run one CLI session, noting where the server's log stood, its exit code and outputs."""
        self.marks.append(mark(self.server))
        self.exit_codes.append(cli.run(*args))
        self.wholes.append(assert_whole(self.run_dir, self.data))


BREAKER_FAILURES = 5
REFUSED_CONCURRENCY = 4
REFUSED_RETRIES = 2


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sessions]:
    """600 members against a closed port (the server was killed), then resumed once it is back.

    The breaker's cooldown outlasts the first session, so that every attempt it lets through
    is counted by the bound below: no probe happens before the resume.
    """
    directory = tmp_path_factory.mktemp("refused")
    data = write_input(directory / "members.csv", 600, seed=303)
    server = FaultServer({}, directory).start()
    cli = Cli(directory)
    try:
        endpoint = {
            **FAST,
            "retries": REFUSED_RETRIES,
            "breaker": {"failures": BREAKER_FAILURES, "cooldown_s": 60},
        }
        config = partner(directory, server.base_url, data, endpoint=endpoint, connect_timeout_s=0.5)
        server.kill()
        sessions = Sessions(data, directory / "out" / "default" / RUN_ID, server)
        concurrency = ("--concurrency", str(REFUSED_CONCURRENCY))
        sessions.session(cli, *_run_args(config, directory / "out", *concurrency))
        server.restart()
        sessions.session(cli, *_resume_args(sessions.run_dir))
        yield sessions
    finally:
        cli.close()
        server.stop()


@pytest.mark.timeout(90)
def test_a_refused_endpoint_fails_members_unavailable_and_exits_3(refused: Sessions) -> None:
    first = refused.wholes[0]
    report("3 refused", "exit code of the run", refused.exit_codes[0])
    assert refused.exit_codes[0] == ExitCode.MEMBER_FAILURES
    assert first.summary["status"] == "failed"
    assert first.by_status.get("endpoint_unavailable", 0) == first.scored


@pytest.mark.timeout(90)
def test_a_refused_endpoint_opens_the_breaker_and_fails_fast(refused: Sessions) -> None:
    requests = refused.wholes[0].requests
    members_x_attempts = refused.wholes[0].scored * 2 * (REFUSED_RETRIES + 1)
    # Per model endpoint: the failures that open it, plus the calls already in flight then.
    bound = 2 * (BREAKER_FAILURES + REFUSED_CONCURRENCY)
    report("3 refused", "request rows / members x attempts / bound",
           f"{requests.height} / {members_x_attempts} / {bound}")  # fmt: skip
    assert requests.height <= bound
    assert refused.wholes[0].offers.get_column("error").str.contains("CircuitOpenError").any()
    assert set(requests.get_column("endpoint")) <= {"ats", "resp"}
    assert requests.get_column("error").str.contains("EndpointConnectionError").all()


@pytest.mark.timeout(90)
def test_a_resume_once_the_endpoint_is_back_scores_every_member_ok(refused: Sessions) -> None:
    resumed = refused.wholes[1]
    report("3 refused", "exit code of the resume", refused.exit_codes[1])
    report("3 refused", "ok after resume", f"{resumed.by_status.get('ok', 0)} of {resumed.scored}")
    assert refused.exit_codes[1] == ExitCode.OK
    assert resumed.summary["status"] == "ok"
    assert resumed.by_status.get("ok", 0) == resumed.scored
    # no fault left: each member's three calls, once
    assert len(calls(refused.server, refused.marks[1])) == 3 * resumed.scored


@pytest.fixture(scope="module")
def partly_failed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sessions]:
    """600 members; 30% of them get an answer without the offer field, so the run commits the
    others ok and exits 3; the server is then restarted without faults and the run resumed."""
    directory = tmp_path_factory.mktemp("partly-failed")
    data = write_input(directory / "members.csv", 600, seed=304)
    plan = {"seed": 3, "routes": {OFFER: [{"fault": "wrong_schema", "rate": 0.3, "per": "member"}]}}
    server = FaultServer(plan, directory).start()
    cli = Cli(directory)
    try:
        config = partner(directory, server.base_url, data, endpoint=FAST)
        sessions = Sessions(data, directory / "out" / "default" / RUN_ID, server)
        sessions.session(cli, *_run_args(config, directory / "out"))
        server.set_plan({})
        server.restart()
        sessions.session(cli, *_resume_args(sessions.run_dir))
        yield sessions
    finally:
        cli.close()
        server.stop()


@pytest.mark.timeout(90)
def test_a_resume_calls_no_member_committed_ok_before(partly_failed: Sessions) -> None:
    first = partly_failed.wholes[0]
    committed_ok = first.members("ok")
    called = {r["member"] for r in calls(partly_failed.server, partly_failed.marks[1])}
    report("3 partly failed", "session 1 exit / ok / invalid",
           f"{partly_failed.exit_codes[0]} / {len(committed_ok)} / "
           f"{first.by_status.get('invalid_response', 0)}")  # fmt: skip
    report("3 partly failed", "members called after restart", len(called))
    assert partly_failed.exit_codes[0] == ExitCode.MEMBER_FAILURES
    assert committed_ok, "the first session must commit some members ok"
    assert not called & committed_ok


@pytest.mark.timeout(90)
def test_a_resume_scores_exactly_the_members_that_failed(partly_failed: Sessions) -> None:
    failed = partly_failed.wholes[0].members("invalid_response")
    resumed = partly_failed.wholes[1]
    called = {r["member"] for r in calls(partly_failed.server, partly_failed.marks[1])}
    assert partly_failed.exit_codes[1] == ExitCode.OK
    assert called == failed
    assert resumed.by_status.get("ok", 0) == resumed.scored


# 4. A hanging endpoint -------------------------------------------------------------------------

HANG_TIMEOUT_S = 0.3
HANG_RETRIES = 1
# How far past its timeout an attempt may end: scheduling on a busy machine, not the endpoint.
HANG_SLACK_S = 0.5
HANG_PLAN = {"seed": 4, "routes": {RESP: [{"fault": "hang", "rate": 0.1, "per": "member"}]}}


@pytest.fixture(scope="module")
def hanging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """400 members; RESP never answers for 10% of them. The breaker is kept out of the way."""
    directory = tmp_path_factory.mktemp("hanging")
    data = write_input(directory / "members.csv", 400, seed=404)
    endpoint = {
        **FAST,
        "timeout_s": HANG_TIMEOUT_S,
        "retries": HANG_RETRIES,
        "concurrency": 8,
        "breaker": {"failures": 100_000},
    }
    with FaultServer(HANG_PLAN, directory) as server:
        config = partner(directory, server.base_url, data, endpoint=endpoint)
        result = anyio.run(run, config, directory / "run")
        yield Outcome(assert_whole(result.run_dir, data), result, calls(server), data)


def _hung(outcome: Outcome) -> set[str]:
    """The members the plan hangs on RESP, among those that were scored."""
    plan = Plan.model_validate(HANG_PLAN)
    scored = outcome.whole.members("ok", "endpoint_unavailable", "model_error", "invalid_response")
    return {member for member in scored if plan.choose(RESP, member, 1) is not None}


@pytest.mark.timeout(30)
def test_a_hung_attempt_is_cut_at_its_timeout(hanging: Outcome) -> None:
    requests = hanging.whole.requests
    hung = requests.filter(
        pl.col("member_id").is_in(list(_hung(hanging))), pl.col("endpoint") == "resp"
    )
    latencies: list[float] = hung.get_column("latency_ms").to_list()
    timeout_ms = HANG_TIMEOUT_S * 1000
    report("4 hang", "hung attempts", hung.height)
    report("4 hang", f"hung attempt latency min / max ms (timeout {timeout_ms:g})",
           f"{min(latencies):.1f} / {max(latencies):.1f}")  # fmt: skip
    assert hung.height == len(_hung(hanging)) * (HANG_RETRIES + 1)
    assert hung.get_column("error").str.contains("EndpointTimeout").all()
    assert hung.get_column("status").null_count() == hung.height
    assert min(latencies) >= timeout_ms - 1
    assert max(latencies) <= timeout_ms + HANG_SLACK_S * 1000


@pytest.mark.timeout(30)
def test_hung_members_end_unavailable_and_the_others_ok(hanging: Outcome) -> None:
    whole, hung = hanging.whole, _hung(hanging)
    report("4 hang", "hung members / unavailable / ok",
           f"{len(hung)} / {whole.by_status.get('endpoint_unavailable', 0)} / "
           f"{whole.by_status.get('ok', 0)}")  # fmt: skip
    assert hung
    assert whole.members("endpoint_unavailable") == hung
    assert len(whole.members("ok")) == whole.scored - len(hung)


# 5. kill -9 at five moments, then resume ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """One killed (or final) session of a run."""

    moment: str
    #: index of the server's log at which the session began
    mark: int
    #: members committed ok before the session began
    committed_ok: frozenset[str]
    returncode: int


@dataclass(frozen=True, slots=True)
class KillChain:
    """A run killed five times and resumed to completion."""

    sessions: list[Session]
    whole: Whole
    server: FaultServer
    scored: int


def _committed_ok(run_dir: Path) -> frozenset[str]:
    """The members committed ok in the offers chunks so far."""
    parts = sorted((run_dir / ".parts").glob("p*/offers-*.parquet"))
    if not parts:
        return frozenset()
    chunks = pl.concat(pl.read_parquet(part, columns=["member_id", "status"]) for part in parts)
    return frozenset(chunks.filter(pl.col("status") == "ok").get_column("member_id"))


class _ScoredChunk:
    """The moment a session commits its first offers chunk holding a scored member."""

    def __init__(self, run_dir: Path) -> None:
        self._run_dir = run_dir
        self._known = set(self._parts())

    def _parts(self) -> list[Path]:
        return sorted((self._run_dir / ".parts").glob("p*/offers-*.parquet"))

    def __call__(self) -> bool:
        for part in self._parts():
            if part not in self._known:
                self._known.add(part)
                try:
                    status = pl.read_parquet(part, columns=["status"]).get_column("status")
                except FileNotFoundError:  # merged into the partition's part since the glob
                    return True
                if "ok" in status:
                    return True
        return False


@pytest.fixture(scope="module")
def kill_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillChain]:
    """400 members, every call delayed 10 ms, 2 calls in flight per endpoint, a chunk every
    25 members: the run is killed with SIGKILL at five moments of increasing progress, each
    session resuming the last, then resumed to completion."""
    directory = tmp_path_factory.mktemp("kill-chain")
    data = write_input(directory / "members.csv", 400, seed=505)
    scored = _scored(data)
    needed = 3 * scored
    plan = {"routes": {"*": [{"fault": "slow", "delay_s": 0.01}]}}
    server = FaultServer(plan, directory).start()
    cli = Cli(directory)
    run_dir = directory / "out" / "default" / RUN_ID
    try:
        config = partner(
            directory, server.base_url, data, endpoint={"timeout_s": 5}, output={"chunk_rows": 25}
        )
        concurrency = ("--concurrency", "2")
        # Each moment, given the server's log length when its session began, says when to kill.
        moments: list[tuple[str, Callable[[int], Callable[[], bool]]]] = [
            ("run.json written", lambda since: (run_dir / "run.json").exists),
            ("first call seen", lambda since: lambda: len(calls(server, since)) > 0),
            ("first scored chunk committed", lambda since: _ScoredChunk(run_dir)),
            ("half the needed calls seen", lambda since: lambda: len(calls(server)) >= needed / 2),
            (
                "90% of the needed calls seen",
                lambda since: lambda: len(calls(server)) >= needed * 0.9,
            ),
        ]
        sessions: list[Session] = []
        for index, (moment, condition) in enumerate(moments):
            committed_ok = _committed_ok(run_dir)
            since = mark(server)
            args = (
                _resume_args(run_dir, *concurrency)
                if index
                else _run_args(config, directory / "out", *concurrency)
            )
            process = cli.start(*args)
            wait_until(condition(since), what=moment, alive=process)
            process.send_signal(signal.SIGKILL)
            sessions.append(Session(moment, since, committed_ok, process.wait(10)))
            report("5 kill -9", f"kill {index + 1}: {moment}", f"calls seen {len(calls(server))}")
        committed_ok = _committed_ok(run_dir)
        since = mark(server)
        code = cli.run(*_resume_args(run_dir, *concurrency))
        sessions.append(Session("final resume", since, committed_ok, code))
        report("5 kill -9", "calls seen in all / needed", f"{len(calls(server))} / {needed}")
        yield KillChain(sessions, assert_whole(run_dir, data), server, scored)
    finally:
        cli.close()
        server.stop()


@pytest.mark.timeout(90)
def test_every_kill_hit_a_running_process(kill_chain: KillChain) -> None:
    killed = [session.returncode for session in kill_chain.sessions[:-1]]
    assert killed == [-signal.SIGKILL] * 5
    assert kill_chain.sessions[-1].returncode == ExitCode.OK


@pytest.mark.timeout(90)
def test_a_run_killed_five_times_and_resumed_has_every_member_once_and_ok(
    kill_chain: KillChain,
) -> None:
    whole = kill_chain.whole
    report("5 kill -9", "final statuses", json.dumps(whole.by_status, sort_keys=True))
    assert whole.summary["status"] == "ok"
    assert set(whole.by_status) <= {"ok", "no_transactions"}
    assert whole.by_status["ok"] == kill_chain.scored


@pytest.mark.timeout(90)
def test_no_member_committed_before_a_kill_is_called_again(kill_chain: KillChain) -> None:
    log_entries = kill_chain.server.requests()
    committed = [len(session.committed_ok) for session in kill_chain.sessions]
    report("5 kill -9", "members committed ok before each session", committed)
    assert committed[-1] > 0, "some members must be committed before the final resume"
    for session in kill_chain.sessions:
        called = {entry["member"] for entry in log_entries[session.mark :]}
        assert not called & session.committed_ok, session.moment


# 6. SIGTERM --------------------------------------------------------------------------------

#: what a run logs when its first SIGTERM arrives (the CLI's signal watcher)
SIGTERM_LOGGED = "SIGTERM: finishing in-flight calls, then committing; send it again to exit now"
#: what a run logs when its grace period runs out before the in-flight calls ended
GRACE_OVER = "stopping: grace period over, cancelling in-flight calls"
#: the run's last line of the workflow, on any ending
RUN_FINISHED = re.compile(r"workflow 'offers:default': run finished in \d+\.\d+ s")
REPORT_WRITTEN = re.compile(r"report\.html written in \d+\.\d+ s")
# Far longer than a call can last (its timeout is 5 s): the grace cannot run out while the
# in-flight calls end by themselves, so a grace that ran out is a fault, not a slow machine.
GRACE_S = 30.0


def _stopping(grace_s: float) -> str:
    """What a run logs once it stops taking new members."""
    return f"stopping: no new members; in-flight calls have {grace_s:.1f} s to finish"


@dataclass(frozen=True, slots=True)
class Terminated:
    """A CLI run stopped by SIGTERM, then resumed."""

    exit_code: int
    stopped: Whole
    log: list[str]
    resume_code: int
    resumed: Whole
    scored: int


@pytest.fixture(scope="module")
def terminated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminated]:
    """400 members, calls delayed 10 ms, SIGTERM once a third of the calls are seen."""
    directory = tmp_path_factory.mktemp("sigterm")
    data = write_input(directory / "members.csv", 400, seed=606)
    scored = _scored(data)
    plan = {"routes": {"*": [{"fault": "slow", "delay_s": 0.01}]}}
    cli = Cli(directory)
    run_dir = directory / "out" / "default" / RUN_ID
    with FaultServer(plan, directory) as server:
        try:
            config = partner(
                directory,
                server.base_url,
                data,
                endpoint={"timeout_s": 5},
                shutdown_grace_s=GRACE_S,
            )
            concurrency = ("--concurrency", "2")
            process = cli.start(*_run_args(config, directory / "out", *concurrency))
            wait_until(
                lambda: len(calls(server)) >= scored, what="a third of the calls", alive=process
            )
            process.send_signal(signal.SIGTERM)
            code = process.wait()  # bounded by the tests' pytest-timeout
            stopped = assert_whole(run_dir, data)
            log_before_resume = log_messages(run_dir)
            resume_code = cli.run(*_resume_args(run_dir, *concurrency))
            resumed = assert_whole(run_dir, data)
            yield Terminated(code, stopped, log_before_resume, resume_code, resumed, scored)
        finally:
            cli.close()


@pytest.mark.timeout(90)
def test_sigterm_exits_143_with_every_unscored_member_interrupted(terminated: Terminated) -> None:
    stopped = terminated.stopped
    report("6 SIGTERM mid-run", "exit code", terminated.exit_code)
    report("6 SIGTERM mid-run", "statuses", json.dumps(stopped.by_status, sort_keys=True))
    assert terminated.exit_code == ExitCode.SIGTERM
    assert stopped.summary["status"] == "interrupted"
    assert stopped.summary["error"] is None
    assert set(stopped.by_status) <= {"ok", "no_transactions", "interrupted"}
    assert 0 < stopped.by_status.get("interrupted", 0) < stopped.scored


@pytest.mark.timeout(90)
def test_sigterm_stops_the_run_after_its_in_flight_calls_end_within_the_grace(
    terminated: Terminated,
) -> None:
    log = terminated.log
    assert log.count(SIGTERM_LOGGED) == 1
    assert log.count(_stopping(GRACE_S)) == 1
    assert log.index(SIGTERM_LOGGED) < log.index(_stopping(GRACE_S))
    assert RUN_FINISHED.fullmatch(log[-2]), log[-2]
    assert REPORT_WRITTEN.fullmatch(log[-1]), log[-1]  # the report of what the run did
    assert GRACE_OVER not in log


@pytest.mark.timeout(90)
def test_a_resume_after_sigterm_scores_every_member_ok(terminated: Terminated) -> None:
    resumed = terminated.resumed
    ok = resumed.by_status.get("ok", 0)
    report("6 SIGTERM mid-run", "resume exit / ok",
           f"{terminated.resume_code} / {ok} of {terminated.scored}")  # fmt: skip
    assert terminated.resume_code == ExitCode.OK
    assert resumed.by_status.get("ok", 0) == terminated.scored
    assert set(resumed.by_status) <= {"ok", "no_transactions"}


@pytest.mark.timeout(90)
def test_sigterm_wakes_a_long_backoff_wait(tmp_path: Path) -> None:
    """Every member's first ATS attempt is told to come back in an hour, and the client would
    wait (clamp and deadline allow it): SIGTERM must end that wait, not the grace period."""
    data = write_input(tmp_path / "members.csv", 100, seed=607)
    scored = _scored(data)
    rule = {"fault": "status", "code": 503, "retry_after": "3600", "attempts": [1]}
    cli = Cli(tmp_path)
    with FaultServer({"routes": {ATS: [rule]}}, tmp_path) as server:
        try:
            config = partner(
                tmp_path,
                server.base_url,
                data,
                endpoint={"timeout_s": 5, "retry_after_max_s": 3600},
                member_deadline_s=7200,
                shutdown_grace_s=GRACE_S,
            )
            process = cli.start(*_run_args(config, tmp_path / "out", "--concurrency", "4"))
            # RESP has no fault: once it has seen every member, the ATS workers sit in their waits.
            wait_until(
                lambda: len(server.requests_for(path=RESP)) >= scored,
                what="RESP called for every member",
                alive=process,
            )
            process.send_signal(signal.SIGTERM)
            code = process.wait()  # bounded by pytest-timeout; the grace would end it too
            waiting = {entry["member"] for entry in server.requests_for(path=ATS)}
            ats_url = server.base_url + ATS
        finally:
            cli.close()
    run_dir = tmp_path / "out" / "default" / RUN_ID
    whole = assert_whole(run_dir, data)
    log = log_messages(run_dir)
    report("6 SIGTERM in backoff", "exit code", code)
    report("6 SIGTERM in backoff", "statuses", json.dumps(whole.by_status, sort_keys=True))
    report("6 SIGTERM in backoff", "members in a wait at the signal", len(waiting))
    assert code == ExitCode.SIGTERM
    assert whole.summary["status"] == "interrupted"
    assert whole.by_status.get("interrupted", 0) == scored
    # the members in a wait when the signal came left it for the stop, not for the grace; the
    # others were not called: each member's ATS error says which
    interrupted = f"ats: CallInterrupted: endpoint 'ats' ({ats_url}): run stopping: "
    errors_by_member = dict(whole.offers.select("member_id", "error").iter_rows())
    assert waiting
    assert {member: errors_by_member[member] for member in waiting} == dict.fromkeys(
        waiting, interrupted + "retry abandoned"
    )
    assert {errors_by_member[member] for member in whole.members("interrupted") - waiting} == {
        interrupted + "not called"
    }
    assert log.index(SIGTERM_LOGGED) < log.index(_stopping(GRACE_S))
    assert GRACE_OVER not in log


# 7. Random inputs: both ledgers always balance ----------------------------------------------

_IDS = st.sampled_from(["A", "b", " c ", "M-1", "m-1", "", "  "])
_TIMESTAMPS = st.sampled_from(
    [
        "2023-05-06 07:08:09",
        "2023-12-31T23:00:00Z",
        "2024-01-10 23:59:59",
        "2024-01-11 00:00:00",
        "2030-01-01 00:00:00",
        "2023-02-30 00:00:00",
        "yesterday",
        "",
    ]
)
_TYPES = st.sampled_from(["buy", "GIFT", " Redeem ", "bUy", "refund", "", "gift card"])
_NUMBERS = st.sampled_from(["100", "-200", "1.5", " 7 ", "0", "nan", "inf", "1e400", "12abc", ""])
_ROWS = st.lists(st.tuples(_IDS, _TIMESTAMPS, _TYPES, _NUMBERS, _NUMBERS), max_size=12)


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_ROWS)
def test_random_rows_through_a_whole_run_balance_both_ledgers(
    tmp_path_factory: pytest.TempPathFactory,
    bundled: BundledServer,
    rows: list[tuple[str, str, str, str, str]],
) -> None:
    directory = tmp_path_factory.mktemp("ledgers")
    data = directory / "members.csv"
    frame = pl.DataFrame(rows, schema=list(DEFAULT_COLUMNS.values()), orient="row")
    frame.write_csv(data)
    # however many rows are rejected: the limit on that is tests/pipeline/inputs/test_rejects.py's
    config = partner(directory, bundled.base_url, data, input={"max_reject_rate": 1.0})
    result = anyio.run(run, config, directory / "run")
    whole = assert_whole(result.run_dir, data)
    assert whole.summary["ledger"]["rows_in"] == len(rows)
    assert whole.offers.height == len({row[0].strip() for row in rows} - {""})


# Regressions found by the matrix -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_finished_run_can_be_resumed(tmp_path: Path, bundled: BundledServer) -> None:
    data = write_input(tmp_path / "members.csv", 50, seed=701)
    config = load_config(partner(tmp_path, bundled.base_url, data))
    first = await run(config, tmp_path / "run")
    requests = pl.read_parquet(first.run_dir / "requests.parquet")

    resumed = await run(config, first.run_dir, resume=True)

    assert resumed.exit_code == ExitCode.OK
    whole = assert_whole(resumed.run_dir, data)
    assert whole.requests.equals(requests)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_stop_while_one_model_lags_is_not_a_failure(tmp_path: Path) -> None:
    """ATS holds every member in a long backoff while RESP runs ahead: a graceful stop must
    end both branches on the same members, so that their join sees each member whole."""
    data = write_input(tmp_path / "members.csv", 60, seed=702)
    scored = _scored(data)
    rule = {"fault": "status", "code": 503, "retry_after": "3600", "attempts": [1]}
    with FaultServer({"routes": {ATS: [rule]}}, tmp_path) as server:
        config = load_config(
            partner(
                tmp_path,
                server.base_url,
                data,
                endpoint={"timeout_s": 5, "retry_after_max_s": 3600, "concurrency": 2},
                member_deadline_s=7200,
                shutdown_grace_s=30,
            )
        )
        shutdown = Shutdown()
        outcome: list[RunReport] = []

        async def run_it() -> None:
            outcome.append(await run(config, tmp_path / "run", shutdown=shutdown))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(run_it)
                # The server is another process: poll its log for RESP having seen everyone.
                while len(server.requests_for(path=RESP)) < scored:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                shutdown.request(signal.SIGTERM)

    (result,) = outcome
    whole = assert_whole(result.run_dir, data)
    assert result.exit_code == ExitCode.SIGTERM
    assert result.error is None
    assert whole.summary["error"] is None
    assert whole.by_status.get("interrupted", 0) == scored


def test_input_members_are_what_the_reader_calls_members(tmp_path: Path) -> None:
    """The whole-run check's own reading of an input agrees with the reader on a sample."""
    data = write_input(tmp_path / "members.csv", 200, seed=703)
    result = read_transactions(data, as_of=parse_as_of(AS_OF))
    assert input_members(data) == set(result.members)
