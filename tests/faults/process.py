"""FaultServer: the fault server in a child process, started, restarted and always stopped."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from offerflow.serving import ChildServer
from tests.faults.plan import Plan

__all__ = ["READY_PREFIX", "FaultServer"]

#: the start of the one line the fault server prints on stdout once it accepts connections
READY_PREFIX = "fault server on "

# The repository root: ``python -m tests.faults.server`` must run from here to import ``tests``.
_ROOT = Path(__file__).resolve().parents[2]


class FaultServer(ChildServer):
    """The fault server on 127.0.0.1 in a child process, as a context manager.

    ``with FaultServer(plan, tmp_path) as server:`` writes the plan, starts
    ``python -m tests.faults.server`` on a free port, waits for its ready line and exposes
    ``server.base_url``; leaving the block stops it. ``kill()`` ends it as a crash would;
    ``restart()`` serves again on the same port, with the plan last given to ``set_plan()``.
    ``requests()`` reads the request log, which spans every run of this server.
    """

    ready_prefix = READY_PREFIX
    label = "fault server"
    # A test helper, not part of offerflow: it fails with the builtin error.
    usage_error = RuntimeError
    start_error = RuntimeError

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
        super().__init__(
            port=port, startup_timeout=startup_timeout, stop_timeout=stop_timeout, cwd=_ROOT
        )
        self.seed = seed
        self._plan = Plan.model_validate(plan)
        # A directory of its own, so that several servers may share one tmp_path.
        directory = Path(tempfile.mkdtemp(prefix="fault-server-", dir=tmp_path))
        self.plan_path = directory / "plan.json"
        self.log_path = directory / "requests.jsonl"

    @property
    def command(self) -> list[str]:
        """The command line the next start() runs."""
        command = [sys.executable, "-m", "tests.faults.server", "--host", "127.0.0.1"]
        command += ["--port", str(self._port), "--plan", str(self.plan_path)]
        command += ["--log", str(self.log_path)]
        return command if self.seed is None else [*command, "--seed", str(self.seed)]

    def set_plan(self, plan: Mapping[str, Any]) -> None:
        """Replace the plan; the next start() or restart() serves it."""
        self._plan = Plan.model_validate(plan)

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server received, in order, across its runs.

        A line the server is still writing is left for the next call: a read may see part of
        a write, so only the text up to the last newline counts.
        """
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        return [orjson.loads(line) for line in complete.splitlines()]

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

    def _prepare(self) -> None:
        """Write the plan for the child to read."""
        self.plan_path.write_bytes(
            orjson.dumps(self._plan.model_dump(mode="json", exclude_unset=True))
        )
