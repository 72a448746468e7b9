"""A child process measured from outside: wall time, CPU (user + sys) and peak RSS.

A child's ``ru_maxrss`` counts the pages it shares with its parent between fork and exec, so a
child forked straight from the harness (which holds polars and generated inputs) would report
at least the harness's own peak. Every measured command is therefore started by a small
launcher (``python -I -S``, ~8 MB) that spawns it, reaps it with ``os.wait4`` and reports the
command's own rusage and wall time: the figures are those of the command and its reaped
descendants, and of nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChildFailed", "Measured", "measure"]

_TAIL = 3000

# Runs in the launcher: spawn argv[2:], reap it, write its figures to the file argv[1].
_LAUNCHER = """\
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started_at = time.time()
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
figures = (os.waitstatus_to_exitcode(status), started_at, wall,
           usage.ru_utime, usage.ru_stime, usage.ru_maxrss)
with open(report, "w") as out:
    out.write(" ".join(map(repr, figures)))
"""


@dataclass(frozen=True, slots=True)
class Measured:
    """How one child process ran: its own resource usage, as the kernel accounted it."""

    argv: tuple[str, ...]
    #: the exit code, or minus the signal that killed it
    returncode: int
    #: time.time() just before the spawn, to place the child's own timestamps
    started_at: float
    #: from just before the spawn to just after the child was reaped (time.perf_counter)
    wall_s: float
    #: CPU of the child, all its threads and its reaped descendants (os.wait4's rusage)
    user_s: float
    sys_s: float
    #: the child's peak resident set size (ru_maxrss, KiB on Linux) in MiB
    max_rss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds of the child."""
        return self.user_s + self.sys_s

    def as_dict(self) -> dict[str, float | int]:
        """The figures, rounded, for results.json."""
        return {
            "returncode": self.returncode,
            "wall_s": round(self.wall_s, 4),
            "user_s": round(self.user_s, 4),
            "sys_s": round(self.sys_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "max_rss_mb": round(self.max_rss_mb, 1),
        }


class ChildFailed(RuntimeError):
    """Raised when a measured child exits with a non-zero code; carries its stderr tail."""

    def __init__(self, measured: Measured) -> None:
        tail = measured.stderr[-_TAIL:].strip() or "(stderr empty)"
        super().__init__(
            f"{' '.join(measured.argv)} exited with {measured.returncode}; stderr ends:\n{tail}"
        )
        self.measured = measured


def measure(argv: Sequence[str], *, cwd: Path | None = None, check: bool = True) -> Measured:
    """Run ``argv`` to completion through the launcher and measure it.

    Raises ChildFailed on a non-zero exit (unless ``check`` is false). Output goes to files,
    not pipes, so that a chatty child never blocks on a full pipe. The launcher and the child
    run in a session of their own: an interrupted harness kills both, and nothing else.
    """
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as temp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        report = Path(temp) / "rusage"
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            code = launcher.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        if code != 0 or not report.exists():
            raise RuntimeError(f"the launcher of {' '.join(argv)} failed ({code}):\n{stderr}")
        returncode, started_at, wall_s, user_s, sys_s, max_rss_kb = report.read_text().split()
    measured = Measured(
        argv=tuple(argv),
        returncode=int(returncode),
        started_at=float(started_at),
        wall_s=float(wall_s),
        user_s=float(user_s),
        sys_s=float(sys_s),
        max_rss_mb=int(max_rss_kb) / 1024,
        stdout=stdout,
        stderr=stderr,
    )
    if check and measured.returncode != 0:
        raise ChildFailed(measured)
    return measured
