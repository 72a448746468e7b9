"""A run's directory: its name (the run id) and its making, before any work is done."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from offerflow.config import PartnerConfig
from offerflow.errors import OutputError, UsageError
from offerflow.pipeline.outputs.sinks import make_dir

__all__ = ["RUN_ID", "SPLIT", "check_run_id", "new_run_dir"]


#: a run id: one path component of 1 to 128 letters, digits, ``.``, ``_`` and ``-``, starting
#: with a letter or a digit (never ``.``, ``..``, a hidden name or an option-like ``-x``)
#: a run on a cluster: its input split into a bucket per partition (kept for --resume)
SPLIT = ".split"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it matches :data:`RUN_ID`; else a ValueError saying what a run id is."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"{run_id!r} is not a run id: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return run_id


def new_run_dir(config: PartnerConfig, out: Path | None = None, run_id: str | None = None) -> Path:
    """Create ``<out>/<partner>/<run_id>/``, failing (exit 4) before any work when it can't.

    A ``run_id`` that is not one safe path component (:data:`RUN_ID`) is a UsageError. The run
    directory gets the config's ``output.dir_mode`` whatever the umask (the directories above it,
    shared by runs, are made as the umask says).
    """
    if run_id is None:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    base = out or config.output.dir
    if not isinstance(base, Path):
        raise UsageError(f"{base}: a run directory here is a local one (stage an object store's)")
    run_dir = base / config.partner / run_id
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        make_dir(run_dir, config.output.dir_mode)
        probe = run_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot create the run directory: {exc.strerror}", path=run_dir) from exc
    return run_dir
