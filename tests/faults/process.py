"""FaultServer: the fault server in a child process, started, restarted and always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from tests.faults.plan import Plan

__all__ = ["READY_PREFIX", "FaultServer"]

#: the start of the one line the fault server prints on stdout once it accepts connections
READY_PREFIX = "fault server on "

# The repository root: ``python -m tests.faults.server`` must run from here to import ``tests``.
_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.01
_STDERR_TAIL = 4000


class FaultServer:
    """The fault server on 127.0.0.1 in a child process, as a context manager.

    ``with FaultServer(plan, tmp_path) as server:`` writes the plan, starts
    ``python -m tests.faults.server`` on a free port, waits for its ready line and exposes
    ``server.base_url``; leaving the block stops it. ``kill()`` ends it as a crash would;
    ``restart()`` serves again on the same port, with the plan last given to ``set_plan()``.
    ``requests()`` reads the request log, which spans every run of this server.
    """

    def __init__(
        self,
        plan: Mapping[str, Any],
        tmp_path: Path,
        *,
        seed: int | None = None,
        port: int = 0,
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """Prepare (not start) a server; ``seed``, when given, overrides the plan's seed.

        Raises pydantic's ValidationError for a plan the server would refuse.
        """
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._plan = Plan.model_validate(plan)
        self._port = port
        # A directory of its own, so that several servers may share one tmp_path.
        directory = Path(tempfile.mkdtemp(prefix="fault-server-", dir=tmp_path))
        self.plan_path = directory / "plan.json"
        self.log_path = directory / "requests.jsonl"
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., FaultServer] | None = None
        #: how the last run ended: its exit code, negative for the signal that killed it
        self.returncode: int | None = None

    @property
    def command(self) -> list[str]:
        """The command line the next start() runs."""
        command = [sys.executable, "-m", "tests.faults.server", "--host", "127.0.0.1"]
        command += ["--port", str(self._port), "--plan", str(self.plan_path)]
        command += ["--log", str(self.log_path)]
        return command if self.seed is None else [*command, "--seed", str(self.seed)]

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped (it may have died since)."""
        return self._process is not None

    @property
    def port(self) -> int:
        """The port the server listens on, kept across restarts."""
        self._check_running()
        return self._port

    @property
    def base_url(self) -> str:
        """The server's URL without a trailing slash, e.g. ``http://127.0.0.1:43123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        self._check_running()
        assert self._process is not None
        return self._process.pid

    def set_plan(self, plan: Mapping[str, Any]) -> None:
        """Replace the plan; the next start() or restart() serves it."""
        self._plan = Plan.model_validate(plan)

    def start(self) -> FaultServer:
        """Start the server and wait for its ready line; raise RuntimeError if it fails."""
        if self._process is not None:
            raise RuntimeError("the FaultServer is already running")
        self.plan_path.write_bytes(
            orjson.dumps(self._plan.model_dump(mode="json", exclude_unset=True))
        )
        # Files, not pipes: a pipe nobody drains blocks the child once it fills up.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.returncode = None
        self._process = subprocess.Popen(
            self.command,
            cwd=_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )
        # A server that is forgotten, or still running at interpreter exit, is killed anyway.
        self._finalizer = weakref.finalize(
            self, _shutdown, self._process, (self._stdout, self._stderr), signal.SIGKILL, 0.0
        )
        try:
            self._port = self._await_announcement()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout``."""
        self._end(signal.SIGTERM, self.stop_timeout)

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        self._end(signal.SIGKILL, 0.0)

    def restart(self) -> FaultServer:
        """Stop the server if it runs, and start it again on the same port."""
        self.stop()
        return self.start()

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server received, in order, across its runs."""
        try:
            lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in lines]

    def requests_for(
        self, path: str | None = None, member: str | None = None
    ) -> list[dict[str, Any]]:
        """The requests on a path and/or of a member, in order."""
        return [
            entry
            for entry in self.requests()
            if (path is None or entry["path"] == path)
            and (member is None or entry["member"] == member)
        ]

    def stderr_tail(self) -> str:
        """Return the end of what the running server wrote on stderr so far."""
        if self._stderr is None:
            return ""
        size = os.fstat(self._stderr.fileno()).st_size
        start = max(0, size - _STDERR_TAIL)
        return os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"http://127.0.0.1:{self._port}" if self._process is not None else "stopped"
        return f"<FaultServer {state}>"

    def _check_running(self) -> None:
        if self._process is None:
            raise RuntimeError("the FaultServer is not running: start() it or use it in a with")

    def _await_announcement(self) -> int:
        """Wait for the ready line on the child's stdout; return the port it names."""
        assert self._process is not None
        assert self._stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            line, newline, _ = os.pread(self._stdout.fileno(), 4096, 0).partition(b"\n")
            if newline:
                text = line.decode(errors="replace").strip()
                if not text.startswith(READY_PREFIX):
                    raise self._failure(f"announced {text!r} instead of its URL")
                return int(text.rsplit(":", 1)[1])
            if self._process.poll() is not None:
                raise self._failure(f"exited at start (code {self._process.returncode})")
            if time.monotonic() > deadline:
                raise self._failure(f"did not announce its URL within {self.startup_timeout:g} s")
            time.sleep(_POLL_S)

    def _failure(self, what: str) -> RuntimeError:
        """Return the error for a server that failed to start, with its stderr tail."""
        tail = self.stderr_tail().strip()
        details = f"; its stderr ends with:\n{tail}" if tail else "; its stderr is empty"
        return RuntimeError(f"the fault server ({' '.join(self.command)}) {what}{details}")

    def _end(self, first: signal.Signals, timeout: float) -> None:
        """Stop the child once, record how it ended, and forget it."""
        process, files = self._process, (self._stdout, self._stderr)
        self._process = self._stdout = self._stderr = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            self.returncode = _shutdown(process, files, first, timeout)


def _shutdown(
    process: subprocess.Popen[bytes],
    files: tuple[IO[bytes] | None, ...],
    first: signal.Signals,
    timeout: float,
) -> int:
    """Signal the child, escalate to SIGKILL after ``timeout``, reap it, close its files."""
    try:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(first)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    finally:
        for file in files:
            if file is not None:
                file.close()
