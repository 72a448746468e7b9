"""BundledServer: a real server in a child process, started, checked and always stopped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from offerflow.errors import UsageError, WorldError
from offerflow.serving import BundledServer
from tests.processes import busy_port, pid_is_gone
from tests.samples import PLAIN_FEATURES

# Generous next to a start of about a second; pytest-timeout ends a hung stop() or start().
pytestmark = pytest.mark.timeout(30)

FEATURES = PLAIN_FEATURES
SERVE = [sys.executable, "-m", "offerflow.serving", "--host", "127.0.0.1"]


def live_members(pgid: int) -> list[int]:
    """The processes of a group that are alive: zombies, dead but not yet reaped, do not count."""
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended while we looked
            continue
        state, _parent, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in "ZX":
            members.append(int(entry))
    return members


def group_is_gone(pgid: int) -> bool:
    """Whether every process of the group has ended, allowing 2 s for SIGKILLed ones to die."""
    # multiprocessing's resource tracker outlives the server by design and may be ending now.
    deadline = time.monotonic() + 2
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not live_members(pgid)


async def ats(base_url: str) -> object:
    """Call the ATS endpoint; return the decoded answer."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(base_url, timeout=timeout) as http,
        http.post("/ml/ats/predict", json=FEATURES) as response,
    ):
        assert response.status == 200
        return await response.json()


@pytest.mark.anyio
@pytest.mark.parametrize("workers", [1, 2])
async def test_serves_on_a_free_port_and_leaves_nothing_behind(workers: int) -> None:
    with BundledServer(workers=workers) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        assert await ats(server.base_url) == {"prediction": 85.0}
        pid = server.pid
        assert pid in live_members(pid)
    assert pid_is_gone(pid)
    assert group_is_gone(pid)


@pytest.mark.anyio
async def test_a_two_worker_server_is_four_processes() -> None:
    with BundledServer(workers=2) as server:
        # uvicorn's supervisor (server.pid) and, in its process group, its two spawned workers
        # and the resource tracker that multiprocessing's spawn starts before the first worker.
        assert len(live_members(server.pid)) == 4
        assert await ats(server.base_url) == {"prediction": 85.0}


def test_stops_when_the_body_raises() -> None:
    pids = []

    def fail_while_serving() -> None:
        with BundledServer() as server:
            pids.append(server.pid)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_while_serving()
    assert pid_is_gone(pids[0])


def test_a_restart_keeps_the_url() -> None:
    server = BundledServer()
    try:
        server.start()
        url, first_pid = server.base_url, server.pid
        server.stop()
        assert pid_is_gone(first_pid)
        server.start()
        assert (server.base_url, server.running) == (url, True)
        assert server.pid != first_pid
    finally:
        server.stop()
    assert not server.running


def test_kill_ends_the_server_at_once() -> None:
    with BundledServer() as server:
        pid = server.pid
        server.kill()
        assert pid_is_gone(pid)
        assert not server.running


def test_stop_escalates_to_sigkill() -> None:
    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    announce = "print('offerflow serving on http://127.0.0.1:1', flush=True); time.sleep(60)"
    server = BundledServer(command=[sys.executable, "-c", ignore_term + announce], stop_timeout=0.3)
    # It announces but does not answer pong, so start() stops it, through SIGKILL.
    started = time.monotonic()
    with pytest.raises(WorldError, match="does not answer GET"):
        server.start()
    assert time.monotonic() - started < 10
    assert not server.running


def test_a_server_that_dies_at_start_is_a_clear_error() -> None:
    server = BundledServer(command=[*SERVE, "--port", "0", "--workers", "0"])
    with pytest.raises(
        WorldError, match=r"exited at start \(exit code 2\)(.|\n)*must be at least 1"
    ):
        server.start()
    assert not server.running


def test_a_busy_port_is_a_clear_error() -> None:
    with busy_port() as port:
        server = BundledServer(command=[*SERVE, "--port", str(port)])
        with pytest.raises(WorldError, match=f"cannot bind 127.0.0.1:{port}"):
            server.start()


def test_a_server_that_never_announces_times_out_and_is_stopped() -> None:
    script = "import sys, time; print('warming up', file=sys.stderr, flush=True); time.sleep(60)"
    server = BundledServer(command=[sys.executable, "-c", script], startup_timeout=0.5)
    with pytest.raises(WorldError, match=r"did not announce its URL within 0.5 s(.|\n)*warming up"):
        server.start()
    assert not server.running


def test_a_server_that_announces_something_else_is_refused() -> None:
    script = "import time; print('hello', flush=True); time.sleep(60)"
    with pytest.raises(WorldError, match="announced 'hello' instead of its URL"):
        BundledServer(command=[sys.executable, "-c", script]).start()


FLOODING_SERVER = """
import http.server, sys

class Pong(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"msg": "pong"}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Pong)
print(f"offerflow serving on http://127.0.0.1:{server.server_port}", flush=True)
sys.stdout.write("x" * 1_000_000)
sys.stdout.flush()
sys.stderr.write("y" * 1_000_000)
sys.stderr.flush()
server.serve_forever()
"""


def test_a_server_writing_a_lot_is_not_blocked() -> None:
    # A megabyte on stdout and stderr would fill pipes nobody reads and stop it before it serves.
    with BundledServer(command=[sys.executable, "-c", FLOODING_SERVER]) as server:
        tail = server.stderr_tail()
        assert tail == "y" * len(tail)
        assert 1000 < len(tail) < 1_000_000


ORPHANING_SERVER = f"""
import subprocess, sys
# A child that ignores SIGTERM and outlives its parent: only SIGKILL ends it.
subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
{FLOODING_SERVER}
"""


def test_stop_leaves_no_process_of_the_group_behind() -> None:
    with BundledServer(command=[sys.executable, "-c", ORPHANING_SERVER]) as server:
        pid = server.pid
        assert len(live_members(pid)) == 2
    assert group_is_gone(pid)


def test_a_forgotten_server_is_stopped_when_the_interpreter_exits() -> None:
    script = "from offerflow.serving import BundledServer; print(BundledServer().start().pid)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert pid_is_gone(int(result.stdout))


def test_needs_a_start_before_use() -> None:
    server = BundledServer()
    with pytest.raises(UsageError, match="not running"):
        _ = server.base_url
    with pytest.raises(UsageError, match="not running"):
        _ = server.pid
    server.stop()  # stopping what never started is fine


def test_cannot_start_twice() -> None:
    with BundledServer() as server, pytest.raises(UsageError, match="already running"):
        server.start()


def test_needs_a_worker() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        BundledServer(workers=0)


def test_the_server_runs_in_its_own_process_group() -> None:
    # So that stop() reaches its workers, and a Ctrl-C meant for the caller does not.
    with BundledServer() as server:
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_stops_when_its_parent_is_killed(workers: int) -> None:
    """A run killed with SIGKILL cannot stop its server; the server must not outlive it."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from offerflow.serving import BundledServer\n"
            f"server = BundledServer(workers={workers}).start()\n"
            "print(os.getpgid(server.pid), flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pgid = int(parent.stdout.readline())
        assert live_members(pgid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_is_gone(pgid)
