"""Real parts for the distributed tests, started on 127.0.0.1 and stopped by the tests.

``dask scheduler`` and ``dask worker`` as processes of their own (the way a cluster is run),
and an S3-compatible server (moto in server mode) with a bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: how long a cluster process may take to come up
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Cluster:
    """A scheduler's address, and the processes of the cluster."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: subprocess.Popen[bytes]


def _dask() -> list[str]:
    """The ``dask`` command of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask"))]


@contextlib.contextmanager
def dask_cluster(
    tmp_path: Path, *, workers: int = 2, environ: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """``dask scheduler`` on 127.0.0.1 (a free port) and one ``dask worker`` with ``workers``
    worker processes of one thread each, with ``environ`` added to their environment; both are
    stopped (the whole process group) on exit."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "cluster-logs"
    logs.mkdir(exist_ok=True)
    quiet = {**os.environ, **(environ or {}), "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning"}
    scheduler = subprocess.Popen(
        [
            *_dask(),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            # its HTTP routes (health, metrics) are served even without a dashboard: here only
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        stdout=(logs / "scheduler.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=quiet,
    )
    processes = [scheduler]
    try:
        address = _wait_for_address(scheduler_file, scheduler)
        pool = subprocess.Popen(
            [
                *_dask(),
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nworkers",
                str(workers),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=(logs / "workers.out").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=quiet,
        )
        processes.append(pool)
        _wait_for_workers(address, workers)
        yield Cluster(address, scheduler, pool)
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_for_address(scheduler_file: Path, scheduler: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {scheduler.returncode}")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            address: str = json.loads(scheduler_file.read_text())["address"]
            return address
        time.sleep(0.05)
    raise RuntimeError("dask scheduler did not write its address in time")


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_S) as client:
        client.wait_for_workers(count, timeout=START_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class ObjectStore:
    """An S3-compatible server: its endpoint and a bucket made for the test."""

    endpoint_url: str
    bucket: str

    def url(self, key: str) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def client(self) -> Any:
        """A boto3 S3 client of the server, for what a test puts there or looks for."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` in the bucket, the prefix cut off."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [entry["Key"][len(prefix) :] for page in pages for entry in page.get("Contents", [])]


@contextlib.contextmanager
def object_store() -> Iterator[ObjectStore]:
    """moto's S3 server on 127.0.0.1 (a free port) with one empty bucket of a new name.

    moto keeps its buckets in the process, shared by every server started in it, and polars
    keeps a client per bucket: a new name keeps each test's objects and clients its own. The
    standard AWS environment variables a client reads are the test's to set (see
    :func:`aws_environment`).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    bucket = f"offerflow-{uuid.uuid4().hex[:12]}"
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        store = ObjectStore(endpoint, bucket)
        store.client().create_bucket(Bucket=bucket)
        yield store
    finally:
        server.stop()


def aws_environment(store: ObjectStore) -> dict[str, str]:
    """The standard AWS variables that point every S3 client at ``store``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": store.endpoint_url,
        "AWS_ALLOW_HTTP": "true",
    }
