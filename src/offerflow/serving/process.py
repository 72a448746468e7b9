"""Run a server in a child process on a free port, for tests and local runs.

:class:`ChildServer` starts, stops, kills and restarts any server that announces its URL on one
stdout line; :class:`BundledServer` is the one that serves the bundled endpoints.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, ClassVar, Self

import orjson

from offerflow.errors import UsageError, WorldError

__all__ = ["READY_PREFIX", "BundledServer", "ChildServer"]

#: the start of the one line the server prints on stdout once it answers requests
READY_PREFIX = "offerflow serving on "

# Polling the child's output file; short enough not to matter next to the child's start-up.
_POLL_S = 0.01
_STDERR_TAIL = 4000
if TYPE_CHECKING:
    from urllib.request import OpenerDirector


@cache
def _direct() -> OpenerDirector:
    """An opener no proxy from the environment stands in, between us and 127.0.0.1.

    Built on first use: urllib.request takes 20 ms to import, and a run against real endpoints
    never needs it.
    """
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ChildServer(abc.ABC):
    """A server run by a child process, as a context manager.

    The child prints one line ``<ready_prefix><base URL>`` on stdout once it serves. ``start()``
    runs :attr:`command` in a session of its own, waits for that line and for
    :meth:`_check_ready`, and exposes ``base_url``; ``stop()`` ends the child's whole process group
    (SIGTERM, then SIGKILL after ``stop_timeout``), ``kill()`` ends it as a crash would, and a
    restart binds the same port again, so ``base_url`` stays valid. A server that is forgotten, or
    still running at interpreter exit, is stopped anyway. Nothing here needs an event loop.

    Subclasses give :attr:`command`, :attr:`ready_prefix` and :attr:`label`, and may override
    :meth:`_prepare`, :meth:`_parse_announcement`, :meth:`_check_ready` and the error classes.
    """

    #: the start of the one line the child prints on stdout once it serves
    ready_prefix: ClassVar[str]
    #: what error messages call the server, e.g. ``"bundled server"``
    label: ClassVar[str]
    #: raised when the server is used wrong: started twice, asked for its URL while stopped
    usage_error: ClassVar[type[Exception]] = UsageError
    #: raised when the child cannot be started or does not come up
    start_error: ClassVar[type[Exception]] = WorldError

    def __init__(
        self,
        *,
        port: int = 0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        cwd: str | Path | None = None,
    ) -> None:
        """Prepare (not start) a server; ``port`` 0 lets the child pick a free one."""
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        #: how the last run ended: its exit code, negative for the signal that killed it
        self.returncode: int | None = None
        self._cwd = cwd
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._base_url: str | None = None
        self._finalizer: weakref.finalize[..., ChildServer] | None = None

    @property
    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line the next start() runs."""

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped (it may have died since)."""
        return self._process is not None

    @property
    def base_url(self) -> str:
        """The server's URL without a trailing slash, e.g. ``http://127.0.0.1:43123``."""
        if self._base_url is None:
            raise self._not_running()
        return self._base_url

    @property
    def port(self) -> int:
        """The port the server listens on, kept across restarts."""
        if self._process is None:
            raise self._not_running()
        return self._port

    @property
    def pid(self) -> int:
        """The process id of the server (the leader of its process group)."""
        if self._process is None:
            raise self._not_running()
        return self._process.pid

    def start(self) -> Self:
        """Start the server and wait until it is ready; raise ``start_error`` if it is not."""
        if self._process is not None:
            raise self.usage_error(f"the {type(self).__name__} is already running")
        self._prepare()
        # Files, not pipes: a pipe nobody drains would block the server once it fills up.
        # They live as long as the child, so stop() closes them, not a with block.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.returncode = None
        try:
            self._process = subprocess.Popen(
                self.command,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                # Its own process group, so that stop() reaches the workers too.
                start_new_session=True,
            )
        except OSError as exc:
            _close(self._stdout, self._stderr)
            self._stdout = self._stderr = None
            raise self.start_error(f"cannot start the {self.label}: {exc}") from exc
        self._finalizer = weakref.finalize(
            self,
            _shutdown,
            self._process,
            (self._stdout, self._stderr),
            signal.SIGTERM,
            self.stop_timeout,
        )
        try:
            self._base_url, self._port = self._await_announcement()
            self._check_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its workers: SIGTERM, then SIGKILL after ``stop_timeout``."""
        self._end(signal.SIGTERM, self.stop_timeout)

    def kill(self) -> None:
        """Kill the server and its workers at once, as a crash would."""
        self._end(signal.SIGKILL, 0.0)

    def restart(self) -> Self:
        """Stop the server if it runs, and start it again on the same port."""
        self.stop()
        return self.start()

    def stderr_tail(self) -> str:
        """Return the end of what the running server wrote on stderr so far."""
        if self._stderr is None:
            return ""
        size = os.fstat(self._stderr.fileno()).st_size
        start = max(0, size - _STDERR_TAIL)
        # pread leaves the file offset alone: the child shares it and appends through it.
        return os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state()}>"

    def _prepare(self) -> None:  # noqa: B027 (an optional hook)
        """Do what the child needs before each start; nothing by default."""

    def _parse_announcement(self, rest: str) -> str:
        """Return the base URL named by the ready line, given what follows the prefix."""
        return rest

    def _check_ready(self) -> None:  # noqa: B027 (an optional hook)
        """Check, once the child announced itself, that it serves; nothing more by default."""

    def _state(self) -> str:
        """The base URL of a running server, or ``stopped``."""
        return "stopped" if self._base_url is None else self._base_url

    def _not_running(self) -> Exception:
        return self.usage_error(
            f"the {type(self).__name__} is not running: start() it or use it in a with"
        )

    def _await_announcement(self) -> tuple[str, int]:
        """Wait for the ready line on the child's stdout; return the base URL and port it names."""
        assert self._process is not None
        assert self._stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            line, newline, _ = os.pread(self._stdout.fileno(), 4096, 0).partition(b"\n")
            if newline:
                return self._announced(line.decode(errors="replace").strip())
            status = _exit_status(self._process.pid)
            if status is not None:
                raise self._failure(f"exited at start ({status})")
            if time.monotonic() > deadline:
                raise self._failure(f"did not announce its URL within {self.startup_timeout:g} s")
            time.sleep(_POLL_S)

    def _announced(self, text: str) -> tuple[str, int]:
        """Return the base URL and port that a ready line names; refuse any other line."""
        if text.startswith(self.ready_prefix):
            base_url = self._parse_announcement(text.removeprefix(self.ready_prefix))
            try:
                port = urllib.parse.urlsplit(base_url).port
            except ValueError:  # a port out of range
                port = None
            if port is not None:
                return base_url, port
        raise self._failure(f"announced {text!r} instead of its URL")

    def _failure(self, what: str) -> Exception:
        """Return the error for a server that failed to start, with its stderr tail."""
        tail = self.stderr_tail().strip()
        details = f"; its stderr ends with:\n{tail}" if tail else "; its stderr is empty"
        return self.start_error(f"the {self.label} ({' '.join(self.command)}) {what}{details}")

    def _end(self, first: signal.Signals, timeout: float) -> None:
        """Stop the child as _shutdown does, once, record how it ended, and forget it."""
        process, files = self._process, (self._stdout, self._stderr)
        self._process = self._stdout = self._stderr = self._base_url = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            self.returncode = _shutdown(process, files, first, timeout)


class BundledServer(ChildServer):
    """The bundled endpoints served by a child process on 127.0.0.1, as a context manager.

    ``with BundledServer(workers=2) as server:`` starts ``python -m offerflow.serving`` on a free
    port, waits until ``GET /`` answers, and exposes ``server.base_url``; leaving the block stops
    the child and its workers. ``start()``, ``stop()`` and ``kill()`` work without ``with``; a
    restart binds the same port again, so ``base_url`` stays valid. Nothing here needs an event
    loop, so async code may use it too.
    """

    ready_prefix = READY_PREFIX
    label = "bundled server"

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
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.workers = workers
        self._command = None if command is None else list(command)

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

    def __repr__(self) -> str:
        return f"<BundledServer workers={self.workers} {self._state()}>"

    def _check_ready(self) -> None:
        """Check that ``GET /`` answers pong."""
        url = f"{self._base_url}/"
        try:
            with _direct().open(url, timeout=self.startup_timeout) as response:
                body = orjson.loads(response.read())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise self._failure(f"does not answer GET {url}: {exc}") from exc
        if body != {"msg": "pong"}:
            raise self._failure(f"answered GET {url} with {body!r} instead of pong")


def _shutdown(
    process: subprocess.Popen[bytes],
    files: tuple[IO[bytes] | None, ...],
    first: signal.Signals,
    timeout: float,
) -> int:
    """Signal the child's process group, escalate to SIGKILL after ``timeout``, reap, clean up.

    Return the child's exit code, negative for the signal that ended it.
    """
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
    return process.returncode


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
