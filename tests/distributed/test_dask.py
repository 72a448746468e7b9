"""Runs on Dask: the same offers as in one process, a worker killed, a cluster and S3 of their own.

Every cluster here is real: a ``LocalCluster`` the run starts, or ``dask scheduler`` and ``dask
worker`` processes started by the test (``tests.clusters``); object storage is moto's S3 server
on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest

import offerflow
from offerflow.cli import main
from offerflow.errors import ExitCode
from offerflow.pipeline import generate_transactions, write_transactions
from tests.clusters import ObjectStore, aws_environment, dask_cluster, object_store
from tests.faults import FaultServer
from tests.partner_files import default_document, write_partner
from tests.pipeline.matrix import partner, write_input
from tests.pipeline.test_attempt_trail import ENDPOINT as TRAIL_ENDPOINT
from tests.pipeline.test_attempt_trail import PLAN as TRAIL_PLAN
from tests.pipeline.test_attempt_trail import RETRIES as TRAIL_RETRIES

pytest.importorskip("distributed", reason="the dask extra is not installed")

AS_OF = "2024-01-10"
#: the columns that differ from run to run whatever ran it: latencies
LATENCIES = ("ats_ms", "resp_ms", "offer_ms")


def _offers(run_dir: Path | str) -> pl.DataFrame:
    """A run's offers without their latencies, one row per member, sorted."""
    offers: pl.DataFrame = offerflow.open_run(run_dir).offers.drop(LATENCIES).collect()
    return offers.sort("member_id")


def _run(*argv: str) -> int:
    return main(["run", "--as-of", AS_OF, *argv])


def _run_until(
    argv: Sequence[str],
    ready: Callable[[], bool],
    what: str,
    then: Callable[[subprocess.Popen[bytes]], None],
) -> tuple[int, str]:
    """``offerflow run ARGV`` in a process; once ``ready()`` holds, ``then(process)``; its exit
    code and stderr once it ends (it is killed if the test fails first)."""
    run = subprocess.Popen(
        [sys.executable, "-m", "offerflow", "run", "--as-of", AS_OF, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline, f"not {what} within 120 s"
            time.sleep(0.05)
        then(run)
        _, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, err.decode(errors="replace")[-3000:]


def _interrupt(run: subprocess.Popen[bytes]) -> None:
    run.send_signal(signal.SIGINT)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "members.csv"
    write_transactions(generate_transactions(3000, seed=21), path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("partitions", [1, 7])
def test_on_a_local_cluster_the_offers_are_those_of_a_run_in_one_process(
    tmp_path: Path, members: Path, partitions: int
) -> None:
    out = tmp_path / "runs"
    assert _run("--input", str(members), "--out", str(out), "--run-id", "here") == ExitCode.OK
    argv = ["--backend", "dask", "--workers", "2", "--partitions", str(partitions)]
    assert (
        _run("--input", str(members), "--out", str(out), "--run-id", "dask", *argv) == ExitCode.OK
    )
    here, there = out / "default" / "here", out / "default" / "dask"
    assert _offers(there).equals(_offers(here))
    summary = json.loads((there / "summary.json").read_text())
    alone = json.loads((here / "summary.json").read_text())
    assert summary["ledger"] == alone["ledger"]
    assert summary["offers_by_type"] == alone["offers_by_type"]
    assert summary["partitions"] == partitions
    parts = sorted(p.name for p in (there / "offers.parquet").iterdir())
    assert parts == [f"part-{p:05d}.parquet" for p in range(partitions)]
    assert pl.read_csv(there / "rejects.csv").equals(pl.read_csv(here / "rejects.csv"))
    assert not (there / ".split").exists()  # every member is final: the input's copy is gone


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_partners_csv_format_compressed_reads_alike_on_the_workers(tmp_path: Path) -> None:
    partners = Path(__file__).resolve().parents[2] / "partners"
    common = ["--config", str(partners / "vandelay.yaml"), "--out", str(tmp_path)]
    assert _run(*common, "--run-id", "here") == ExitCode.OK
    packed = tmp_path / "transactions.csv.gz"  # the same export, gzipped, split by the workers
    packed.write_bytes(gzip.compress((partners / "vandelay" / "transactions.csv").read_bytes()))
    argv = ["--backend", "dask", "--workers", "1", "--partitions", "3", "--input", str(packed)]
    assert _run(*common, "--run-id", "dask", *argv) == ExitCode.OK
    there = _offers(tmp_path / "vandelay" / "dask")
    assert there.equals(_offers(tmp_path / "vandelay" / "here"))
    assert there.filter(pl.col("status") == "ok").height > 250


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_real_file_gives_the_same_offers_on_a_cluster(
    tmp_path: Path, member_data: Path
) -> None:
    out = tmp_path / "runs"
    common = ["--input", str(member_data), "--out", str(out)]
    assert _run(*common, "--run-id", "here") == ExitCode.OK
    argv = ["--backend", "dask", "--workers", "2", "--partitions", "5"]
    assert _run(*common, "--run-id", "dask", *argv) == ExitCode.OK
    assert _offers(out / "default" / "dask").equals(_offers(out / "default" / "here"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_remote_scheduler_cannot_reach_the_bundled_server(tmp_path: Path) -> None:
    code = _run("--backend", "dask", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path))
    assert code == ExitCode.USAGE


@pytest.fixture
def slow_endpoints(tmp_path: Path) -> Iterator[FaultServer]:
    """The bundled routes, each answer 20 ms late: a run lasts long enough to kill a worker."""
    slow = [{"fault": "slow", "delay_s": 0.02}]
    plan = {"routes": {"/ml/ats/predict": slow, "/ml/resp/predict": slow}}
    with FaultServer(plan, tmp_path) as server:
        yield server


@pytest.fixture
def slow_config(tmp_path: Path, members: Path, slow_endpoints: FaultServer) -> Path:
    """The default partner on the generated members, its endpoints the slow ones."""
    return write_partner(
        tmp_path / "partner.yaml", default_document(slow_endpoints.base_url, members)
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_killed_mid_run_costs_no_member_and_duplicates_none(
    tmp_path: Path,
    slow_config: Path,
) -> None:
    out = tmp_path / "runs"
    with dask_cluster(tmp_path, workers=2) as cluster:
        from distributed import Client

        with Client(cluster.address) as client:
            pids = sorted(client.run(os.getpid).values())
        parts = out / "default" / "killed" / ".parts"
        code, err = _run_until(
            ["--config", str(slow_config), "--out", str(out), "--run-id", "killed",
             "--backend", "dask", "--scheduler", cluster.address, "--partitions", "6"],
            lambda: any(parts.glob("p*/offers-*.parquet")),  # a partition is scoring
            "a partition scoring",
            lambda _: os.kill(pids[0], signal.SIGKILL),
        )  # fmt: skip
    assert code == ExitCode.OK, err
    tables = offerflow.open_run(out / "default" / "killed")
    offers = tables.offers.collect()
    summary = tables.summary
    assert offers.height == offers.get_column("member_id").n_unique()  # no member twice
    assert offers.height == summary["ledger"]["members_in"]  # no member lost
    assert set(offers.get_column("status")) == {"ok", "no_transactions"}
    assert summary["ledger"]["balanced"]


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with object_store() as store:
        yield store


def _upload(store: ObjectStore, local: Path, key: str) -> str:
    store.client().upload_file(str(local), store.bucket, key)
    return store.url(key)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_separate_scheduler_and_workers_run_from_and_into_object_storage(
    tmp_path: Path,
    slow_config: Path,
    members: Path,
    store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = aws_environment(store)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    source = _upload(store, members, "exports/members.csv")
    out = store.url("runs")
    with dask_cluster(tmp_path, workers=2, environ=environ) as cluster:
        code = _run(
            "--config", str(slow_config), "--input", source, "--out", out, "--run-id", "s3",
            "--backend", "dask", "--scheduler", cluster.address, "--partitions", "4",
        )  # fmt: skip
    assert code == ExitCode.OK
    assert _run("--config", str(slow_config), "--input", str(members), "--out", str(tmp_path),
                "--run-id", "here") == ExitCode.OK  # fmt: skip
    there = f"{out}/default/s3"
    assert _offers(there).equals(_offers(tmp_path / "default" / "here"))
    assert offerflow.open_run(there).summary["ledger"]["balanced"]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(offerflow.open_run(there).summary)
    keys = store.keys("runs/default/s3/")
    assert any(key.startswith(".partitions/") for key in keys)
    assert not any(key.startswith(".split/") for key in keys)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_in_one_process_reads_and_writes_object_storage(
    tmp_path: Path, members: Path, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in aws_environment(store).items():
        monkeypatch.setenv(name, value)
    source = _upload(store, members, "exports/members.csv")
    out = store.url("runs")
    assert _run("--input", source, "--out", out, "--run-id", "s3") == ExitCode.OK
    assert _run("--input", str(members), "--out", str(tmp_path), "--run-id", "here") == 0
    there = f"{out}/default/s3"
    assert _offers(there).equals(_offers(tmp_path / "default" / "here"))
    assert offerflow.open_run(there).rejects.collect().height > 0
    # a run id taken in the store is taken, as a local run directory that exists
    assert _run("--input", source, "--out", out, "--run-id", "s3") == ExitCode.OUTPUT


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_interrupted_run_resumes_skipping_its_finished_partitions(
    tmp_path: Path,
    slow_config: Path,
    slow_endpoints: FaultServer,
) -> None:
    out = tmp_path / "runs"
    run_dir = out / "default" / "cut"
    results = run_dir / ".partitions"
    code, err = _run_until(
        ["--config", str(slow_config), "--out", str(out), "--run-id", "cut",
         "--backend", "dask", "--workers", "2", "--partitions", "8"],
        lambda: any(results.glob("part-*.json")),
        "a partition finished",
        _interrupt,
    )  # fmt: skip
    assert code == 130, err
    assert offerflow.open_run(run_dir).summary["status"] == "interrupted"
    assert any((run_dir / ".split").rglob("*.parquet"))  # kept: the resume reads it
    # every partition recorded its members; those with none interrupted are finished
    finished = [
        path
        for path in sorted(results.glob("part-*.json"))
        if "interrupted" not in json.loads(path.read_text())["members_by_status"]
    ]
    assert 0 < len(finished) < 8
    done = pl.concat(
        pl.read_parquet(run_dir / "offers.parquet" / path.with_suffix(".parquet").name)
        for path in finished
    ).get_column("member_id")
    since = len(slow_endpoints.requests())

    # its partitions are the cluster's: one process cannot take them on
    assert main(["run", "--resume", str(run_dir)]) == ExitCode.USAGE
    resume = ["run", "--resume", str(run_dir), "--backend", "dask", "--workers", "2"]
    assert main(resume) == ExitCode.OK
    called = {entry["member"] for entry in slow_endpoints.requests()[since:] if entry["member"]}
    assert called, "the resumed session scored nobody"
    assert called.isdisjoint(done.to_list())  # finished partitions were not run again
    assert _run("--config", str(slow_config), "--as-of", AS_OF, "--out", str(out),
                "--run-id", "here") == ExitCode.OK  # fmt: skip
    assert _offers(run_dir).equals(_offers(out / "default" / "here"))
    assert offerflow.open_run(run_dir).summary["ledger"]["balanced"]
    assert not (run_dir / ".split").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_begun_in_one_process_is_finished_on_a_cluster(
    tmp_path: Path,
    slow_config: Path,
    slow_endpoints: FaultServer,
) -> None:
    out = tmp_path / "runs"
    run_dir = out / "default" / "begun"
    code, err = _run_until(
        ["--config", str(slow_config), "--out", str(out), "--run-id", "begun"],
        lambda: any((run_dir / ".parts").glob("p*/offers-*.parquet")),
        "members committed",
        _interrupt,
    )
    assert code == 130, err
    # the stopped session merged what it committed into its part
    committed = pl.read_parquet(run_dir / "offers.parquet").filter(pl.col("status") == "ok")
    assert committed.height > 0
    since = len(slow_endpoints.requests())

    resume = ["run", "--resume", str(run_dir), "--backend", "dask", "--workers", "1"]
    assert main(resume) == ExitCode.OK
    called = {entry["member"] for entry in slow_endpoints.requests()[since:] if entry["member"]}
    assert called.isdisjoint(committed.get_column("member_id").to_list())
    assert _run("--config", str(slow_config), "--out", str(out), "--run-id", "here") == ExitCode.OK
    assert _offers(run_dir).equals(_offers(out / "default" / "here"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_workers_failed_attempts_are_in_the_drivers_run_log(tmp_path: Path) -> None:
    data = write_input(tmp_path / "members.csv", 80, seed=1303)
    with FaultServer(TRAIL_PLAN, tmp_path) as server:
        config = partner(
            tmp_path, server.base_url, data, endpoint=TRAIL_ENDPOINT, retry_budget={"ratio": 5.0}
        )
        code = _run("--config", str(config), "--out", str(tmp_path / "out"), "--run-id", "r",
                    "--backend", "dask", "--workers", "2", "--partitions", "4")  # fmt: skip
    assert code == ExitCode.MEMBER_FAILURES  # the plan fails more than the budget allows
    run_dir = tmp_path / "out" / "default" / "r"
    assert any((run_dir / ".split").rglob("*.parquet"))  # a resume scores the failed again
    offers = pl.read_parquet(run_dir / "offers.parquet")
    failed = offers.filter(pl.col("status") == "model_error").get_column("member_id").to_list()
    assert failed, "the plan fails some members for good"
    lines = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
    for member in failed:  # grep MEMBER run.log: each failed attempt, the last at ERROR
        records = [json.loads(line) for line in lines if member in line]
        levels = [r["level"] for r in records if r.get("endpoint") == "resp"]
        assert levels == ["WARNING"] * TRAIL_RETRIES + ["ERROR"], (member, records)
