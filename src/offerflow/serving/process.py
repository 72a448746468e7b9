"""Run the bundled endpoints in a child process on a free port, for tests and local runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import IO

import orjson

from offerflow.errors import UsageError, WorldError

__all__ = ["READY_PREFIX", "BundledServer"]

#: the start of the one line the server prints on stdout once it answers requests
READY_PREFIX = "offerflow serving on "

# Polling the child's output file; short enough not to matter next to the child's start-up.
_POLL_S = 0.01
_STDERR_TAIL = 4000
# A proxy from the environment must not stand between us and 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BundledServer:
    """The bundled endpoints served by a child process on 127.0.0.1, as a context manager.

    ``with BundledServer(workers=2) as server:`` starts ``python -m offerflow.serving`` on a free
    port, waits until ``GET /`` answers, and exposes ``server.base_url``; leaving the block stops
    the child and its workers. ``start()``, ``stop()`` and ``kill()`` work without ``with``; a
    restart binds the same port again, so ``base_url`` stays valid. Nothing here needs an event
    loop, so async code may use it too.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        command: Sequence[str] | None = None,
    ) -> None:
        """Prepare (not start) a server; ``command`` replaces the server's command line in tests."""
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._command = None if command is None else list(command)
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._base_url: str | None = None
        self._finalizer: weakref.finalize[..., BundledServer] | None = None

    @property
    def command(self) -> list[str]:
        """The command line the next start() runs."""
        if self._command is not None:
            return list(self._command)
        return [
            sys.executable,
            "-m",
            "offerflow.serving",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
            "--workers",
            str(self.workers),
            # a run killed with SIGKILL cannot stop its server: the server notices instead
            "--exit-with-parent",
        ]

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped (it may have died since)."""
        return self._process is not None

    @property
    def base_url(self) -> str:
        """The server's URL without a trailing slash, e.g. ``http://127.0.0.1:43123``."""
        if self._base_url is None or self._process is None:
            raise UsageError("the BundledServer is not running: start() it or use it in a with")
        return self._base_url

    @property
    def pid(self) -> int:
        """The process id of the server (the supervisor when there are several workers)."""
        if self._process is None:
            raise UsageError("the BundledServer is not running: start() it or use it in a with")
        return self._process.pid

    def start(self) -> BundledServer:
        """Start the server and wait until it answers; raise WorldError if it does not."""
        if self._process is not None:
            raise UsageError("the BundledServer is already running")
        # Files, not pipes: a pipe nobody drains would block the server once it fills up.
        # They live as long as the child, so stop() closes them, not a with block.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                # Its own process group, so that stop() reaches the workers too.
                start_new_session=True,
            )
        except OSError as exc:
            _close(self._stdout, self._stderr)
            self._stdout = self._stderr = None
            raise WorldError(f"cannot start the bundled server: {exc}") from exc
        # A server that is forgotten, or still running at interpreter exit, is stopped anyway.
        self._finalizer = weakref.finalize(
            self,
            _shutdown,
            self._process,
            (self._stdout, self._stderr),
            signal.SIGTERM,
            self.stop_timeout,
        )
        try:
            self._base_url = self._await_announcement()
            self._check_pong()
        except BaseException:
            self.stop()
            raise
        self._port = int(self._base_url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """Stop the server and its workers: SIGTERM, then SIGKILL after ``stop_timeout``."""
        self._end(signal.SIGTERM, self.stop_timeout)

    def kill(self) -> None:
        """Kill the server and its workers at once, as a crash would."""
        self._end(signal.SIGKILL, 0.0)

    def stderr_tail(self) -> str:
        """Return the end of what the server wrote on stderr so far."""
        if self._stderr is None:
            return ""
        size = os.fstat(self._stderr.fileno()).st_size
        start = max(0, size - _STDERR_TAIL)
        # pread leaves the file offset alone: the child shares it and appends through it.
        return os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")

    def __enter__(self) -> BundledServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._base_url if self._process is not None else "stopped"
        return f"<BundledServer workers={self.workers} {state}>"

    def _await_announcement(self) -> str:
        """Wait for the ready line on the child's stdout; return the base URL it names."""
        assert self._process is not None
        assert self._stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            out = os.pread(self._stdout.fileno(), 4096, 0)
            line, newline, _ = out.partition(b"\n")
            if newline:
                text = line.decode(errors="replace").strip()
                if not text.startswith(READY_PREFIX):
                    raise self._failure(f"announced {text!r} instead of its URL")
                return text.removeprefix(READY_PREFIX)
            status = _exit_status(self._process.pid)
            if status is not None:
                raise self._failure(f"exited at start ({status})")
            if time.monotonic() > deadline:
                raise self._failure(f"did not announce its URL within {self.startup_timeout:g} s")
            time.sleep(_POLL_S)

    def _check_pong(self) -> None:
        """Check that ``GET /`` answers pong."""
        url = f"{self._base_url}/"
        try:
            with _DIRECT.open(url, timeout=self.startup_timeout) as response:
                body = orjson.loads(response.read())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise self._failure(f"does not answer GET {url}: {exc}") from exc
        if body != {"msg": "pong"}:
            raise self._failure(f"answered GET {url} with {body!r} instead of pong")

    def _failure(self, what: str) -> WorldError:
        """Return the error for a server that failed to start, with its stderr tail."""
        tail = self.stderr_tail().strip()
        details = f"; its stderr ends with:\n{tail}" if tail else "; its stderr is empty"
        return WorldError(f"the bundled server ({' '.join(self.command)}) {what}{details}")

    def _end(self, first: signal.Signals, timeout: float) -> None:
        """Stop the child as _shutdown does, once, and forget it."""
        process, files = self._process, (self._stdout, self._stderr)
        self._process = self._stdout = self._stderr = self._base_url = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            _shutdown(process, files, first, timeout)


def _shutdown(
    process: subprocess.Popen[bytes],
    files: tuple[IO[bytes] | None, ...],
    first: signal.Signals,
    timeout: float,
) -> None:
    """Signal the child's process group, escalate to SIGKILL after ``timeout``, reap, clean up."""
    try:
        _signal_group(process.pid, first)
        if not _wait_exited(process.pid, timeout):
            _signal_group(process.pid, signal.SIGKILL)
            _wait_exited(process.pid, None)
        # The leader has exited but is not reaped yet, so its group id cannot have been
        # reused: a last SIGKILL to the group safely takes any orphaned worker with it.
        _signal_group(process.pid, signal.SIGKILL)
    finally:
        process.wait()
        _close(*files)


def _close(*files: IO[bytes] | None) -> None:
    """Close (and so delete) the child's output files."""
    for file in files:
        if file is not None:
            file.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _exit_status(pid: int) -> str | None:
    """Describe how a child exited, or return None while it runs; the child is not reaped."""
    # WNOWAIT leaves the child a zombie, which keeps its pid (the group id) reserved.
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return f"exit code {result.si_status}"
    return f"killed by signal {result.si_status}"


def _wait_exited(pid: int, timeout: float | None) -> bool:
    """Wait until a child exits, without reaping it; return whether it did within timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if _exit_status(pid) is not None:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
