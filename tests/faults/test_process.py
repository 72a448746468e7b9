"""FaultServer: the fault server in a child process, killed, restarted and always stopped."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from pathlib import Path

import aiohttp
import anyio
import pydantic
import pytest

from tests.faults import FaultServer
from tests.faults.calls import ATS, always, call, client, logged
from tests.processes import busy_port, pid_is_gone

# A server starts in about half a second; pytest-timeout ends a hung start or stop.
pytestmark = pytest.mark.timeout(30)


@pytest.mark.anyio
async def test_the_log_keeps_a_request_the_server_was_killed_during(
    serve: Callable[..., FaultServer],
) -> None:
    server = serve({"routes": {ATS: [always("hang")]}})
    errors: list[BaseException] = []

    async def hung_call() -> None:
        async with client(server) as http:
            try:
                await call(http, member="hung")
            except aiohttp.ClientError as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hung_call)
        await logged(server, "hung")
        server.kill()
    assert len(errors) == 1
    assert isinstance(errors[0], aiohttp.ClientConnectionError)
    assert server.returncode == -9
    assert [(e["member"], e["fault"]) for e in server.requests()] == [("hung", "hang")]
    assert server.log_path.read_bytes().endswith(b"\n")


@pytest.mark.anyio
async def test_a_restart_after_a_kill_serves_on_the_same_port(
    serve: Callable[..., FaultServer],
) -> None:
    server = serve({})
    url, first_pid = server.base_url, server.pid
    server.kill()
    assert pid_is_gone(first_pid)
    server.restart()
    assert (server.base_url, pid_is_gone(first_pid)) == (url, True)
    async with client(server) as http:
        assert (await call(http)).status == 200


@pytest.mark.anyio
async def test_a_new_plan_takes_effect_on_restart(serve: Callable[..., FaultServer]) -> None:
    server = serve({})
    server.set_plan({"routes": {"*": [always("status", code=503)]}})
    async with client(server) as http:
        before = (await call(http)).status
    server.restart()
    # A new session: the old one's pooled connection went down with the old process.
    async with client(server) as http:
        after = (await call(http)).status
    assert (before, after) == (200, 503)
    assert [e["fault"] for e in server.requests()] == [None, "status"]


@pytest.mark.anyio
async def test_sigterm_stops_it_cleanly_with_a_request_hanging(
    serve: Callable[..., FaultServer],
) -> None:
    server = serve({"routes": {ATS: [always("hang")]}})
    pid = server.pid

    async def hung_call() -> None:
        async with client(server) as http:
            with contextlib.suppress(aiohttp.ClientError):
                await call(http, member="hung")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hung_call)
        await logged(server, "hung")
        server.stop()
    assert (server.returncode, server.running, pid_is_gone(pid)) == (0, False, True)


def test_a_body_that_raises_still_stops_the_server(tmp_path: Path) -> None:
    pids: list[int] = []

    def fail_while_serving() -> None:
        with FaultServer({}, tmp_path) as server:
            pids.append(server.pid)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_while_serving()
    assert pid_is_gone(pids[0])


def test_a_forgotten_server_is_killed(tmp_path: Path) -> None:
    server = FaultServer({}, tmp_path).start()
    pid = server.pid
    del server
    gc.collect()
    assert pid_is_gone(pid)


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with busy_port() as port:
        server = FaultServer({}, tmp_path, port=port)
        with pytest.raises(
            RuntimeError, match=r"exited at start \(exit code 2\)(.|\n)*cannot serve"
        ):
            server.start()
    assert not server.running


def test_a_plan_the_server_would_refuse_is_refused_before_it_starts(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="needs code"):
        FaultServer({"routes": {ATS: [{"fault": "status"}]}}, tmp_path)


def test_the_request_log_leaves_a_line_still_being_written_for_the_next_read(
    tmp_path: Path,
) -> None:
    server = FaultServer({}, tmp_path)
    server.log_path.write_bytes(b'{"path": "/a", "member": "m1"}\n{"path": "/b", "mem')
    assert server.requests() == [{"path": "/a", "member": "m1"}]
    with server.log_path.open("ab") as log:
        log.write(b'ber": "m2"}\n')
    assert [entry["path"] for entry in server.requests()] == ["/a", "/b"]
