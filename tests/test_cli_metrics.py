"""``offerflow run --metrics-port``: live metrics scraped while a real run goes, and none without.

The run is the command in a child process against the fault server, its model endpoints slowed,
so that it lasts long enough to be scraped many times. What is checked are counts, never times:
the totals grow between scrapes, never go back, never pass what the run's summary ends with.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import offerflow
from offerflow.cli import main
from offerflow.errors import ExitCode
from offerflow.pipeline import LiveMetrics, generate_transactions, write_transactions
from offerflow.serving import BundledServer
from tests.faults import FaultServer
from tests.partner_files import default_document, write_partner
from tests.processes import busy_port

AS_OF = "2024-01-10"
#: the in-flight calls of every endpoint in the scraped run
CONCURRENCY = 2
#: how long the child may take to say where its metrics are, and to run (bounds, not checks)
START_S = 60.0
RUN_S = 120.0
#: at most this many scrapes, one every SCRAPE_EVERY_S
SCRAPES = 600
SCRAPE_EVERY_S = 0.05
#: the child imports the offerflow this test imports (a worktree's, not an installed one)
SOURCES = str(Path(offerflow.__file__).resolve().parents[1])

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of one metric, summed by one of their labels."""
    totals: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            key = dict(labels)[label]
            totals[key] = totals.get(key, 0.0) + value
    return totals


def _child_environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (SOURCES, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def members(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    write_transactions(generate_transactions(240, seed=8), path)
    return path


@pytest.fixture
def slow_endpoints(tmp_path: Path) -> FaultServer:
    """The bundled routes, each model answer 50 ms late: 2 in flight make a run of seconds."""
    slow = [{"fault": "slow", "delay_s": 0.05}]
    plan = {"routes": {"/ml/ats/predict": slow, "/ml/resp/predict": slow}}
    return FaultServer(plan, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_serves_totals_that_grow_while_it_runs_and_never_pass_its_summary(
    tmp_path: Path, members: Path, slow_endpoints: FaultServer
) -> None:
    out, log = tmp_path / "runs", tmp_path / "stderr.txt"
    scrapes: list[Samples] = []
    with slow_endpoints, log.open("wb") as stderr:
        config = write_partner(
            tmp_path / "partner.yaml", default_document(slow_endpoints.base_url, members)
        )
        run = subprocess.Popen(
            [
                sys.executable, "-m", "offerflow", "run", "--config", str(config),
                "--as-of", AS_OF, "--out", str(out), "--run-id", "live",
                "--concurrency", str(CONCURRENCY), "--metrics-port", "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=_child_environment(),
        )  # fmt: skip
        try:
            started = time.monotonic()
            served = None
            while served is None and run.poll() is None and time.monotonic() - started < START_S:
                served = re.search(
                    r"metrics at (http://127\.0\.0\.1:(\d+)/metrics)", log.read_text()
                )
                time.sleep(SCRAPE_EVERY_S)
            assert served is not None, log.read_text()[-3000:]
            while run.poll() is None and len(scrapes) < SCRAPES:
                try:
                    scrapes.append(_scrape(served[1]))
                except (OSError, http.client.HTTPException):  # the run ended: its server too
                    break
                time.sleep(SCRAPE_EVERY_S)
            run.wait(timeout=RUN_S)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == ExitCode.OK, log.read_text()[-3000:]
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", int(served[2]))),
    ):
        pass  # the server stopped with the run
    summary = json.loads((out / "default" / "live" / "summary.json").read_text())
    by_status = summary["ledger"]["members_by_status"]
    requests = {name: figures["requests"] for name, figures in summary["endpoints"].items()}

    members_seen = [sum(_by(s, "offerflow_members_total", "status").values()) for s in scrapes]
    requests_seen = [sum(_by(s, "offerflow_requests_total", "endpoint").values()) for s in scrapes]
    assert len(scrapes) >= 2
    assert members_seen == sorted(members_seen)  # counters never go back
    assert requests_seen == sorted(requests_seen)
    growing = [i for i in range(1, len(scrapes)) if members_seen[i] > members_seen[i - 1] > 0]
    assert growing, members_seen  # the totals moved between scrapes, not only at the end
    assert any(requests_seen[i] > requests_seen[i - 1] for i in growing)
    for samples in scrapes:
        for status, count in _by(samples, "offerflow_members_total", "status").items():
            assert count <= by_status[status]
        for endpoint, count in _by(samples, "offerflow_requests_total", "endpoint").items():
            assert count <= requests[endpoint]
        latencies = _by(samples, "offerflow_request_latency_seconds_count", "endpoint")
        assert all(count <= requests[endpoint] for endpoint, count in latencies.items())
        inflight = _by(samples, "offerflow_inflight_calls", "endpoint")
        assert set(inflight) == set(requests)
        assert all(0 <= count <= CONCURRENCY for count in inflight.values())
        read = samples[("offerflow_rows_read_total", ())]
        rejected = samples[("offerflow_rows_rejected_total", ())]
        assert (read, rejected) in (
            (0, 0),
            (summary["ledger"]["rows_in"], summary["ledger"]["rows_rejected"]),
        )
    assert members_seen[-1] > 0


def test_a_run_without_a_metrics_port_makes_no_metrics(
    tmp_path: Path, bundled: BundledServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[LiveMetrics] = []
    original = LiveMetrics.__init__

    def counted(self: LiveMetrics, *args: object, **kwargs: object) -> None:
        made.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LiveMetrics, "__init__", counted)
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(60, seed=2), data)
    config = write_partner(tmp_path / "p.yaml", default_document(bundled.base_url, data))
    argv = ["run", "--config", str(config), "--as-of", AS_OF, "--out", str(tmp_path)]
    assert main(argv) == ExitCode.OK
    assert made == []
    assert main([*argv, "--metrics-port", "0"]) == ExitCode.OK
    assert len(made) == 1  # the seam above sees one when there is one


def test_a_run_without_a_metrics_port_does_not_import_the_metrics_library(
    tmp_path: Path, bundled: BundledServer
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(60, seed=2), data)
    config = write_partner(tmp_path / "p.yaml", default_document(bundled.base_url, data))
    code = (
        "import sys; from offerflow.cli import main; "
        f"code = main(['run', '--config', {str(config)!r}, '--as-of', {AS_OF!r}, "
        f"'--out', {str(tmp_path)!r}]); "
        "print(code, 'prometheus_client' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_environment(),
        check=False,
    )
    assert result.stdout.split() == ["0", "False"], result.stderr[-3000:]


def test_a_metrics_port_in_use_exits_2_naming_it(
    tmp_path: Path, bundled: BundledServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_partner(tmp_path / "p.yaml", default_document(bundled.base_url))
    with busy_port() as port:
        argv = ["run", "--config", str(config), "--out", str(tmp_path), "--metrics-port", str(port)]
        assert main(argv) == ExitCode.USAGE
    assert f"cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_metrics_port_that_is_no_port_exits_2(port: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "--metrics-port", port])
    assert caught.value.code == ExitCode.USAGE
