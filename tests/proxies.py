"""A real forward proxy for tests: proxy.py (PyPI) in a child process on 127.0.0.1, port 0.

It forwards plain http requests (absolute-form) and opens ``CONNECT`` tunnels, and writes one
access-log line per request or tunnel once its connection closes, which tells a test what went
through it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

__all__ = ["ForwardProxy", "forward_proxy"]

#: how long the proxy may take to start, and a log line to appear, before the test fails
_WAIT_S = 20.0
_POLL_S = 0.02


@dataclass(frozen=True)
class ForwardProxy:
    """A running proxy: its URL, and its access log."""

    url: str
    log_file: Path

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """The access-log lines holding ``text`` once there are ``count`` (or those there are
        after a while). Awaits: the event loop must run for the client's connections to close.
        """
        for _ in range(int(_WAIT_S / _POLL_S)):  # a file has no event to wait on: poll it
            if len(self.lines(text)) >= count:
                break
            await anyio.sleep(_POLL_S)
        return self.lines(text)

    def lines(self, text: str) -> list[str]:
        """The access-log lines holding ``text`` so far."""
        if not self.log_file.exists():
            return []
        log = self.log_file.read_text(encoding="utf-8", errors="replace")
        return [line for line in log.splitlines() if "access_log" in line and text in line]


@contextlib.contextmanager
def forward_proxy(directory: Path) -> Iterator[ForwardProxy]:
    """proxy.py listening on 127.0.0.1 until the block ends; its files in ``directory``."""
    port_file = directory / "proxy.port"
    log_file = directory / "proxy.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--threaded",
            "--num-acceptors",
            "1",
            "--log-file",
            str(log_file),
            "--log-level",
            "INFO",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + _WAIT_S
        while not (port_file.exists() and port_file.read_text().strip().isdigit()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"proxy.py did not start (see {log_file})")
            time.sleep(0.02)
        yield ForwardProxy(f"http://127.0.0.1:{port_file.read_text().strip()}", log_file)
    finally:
        process.terminate()
        try:
            process.wait(timeout=_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
