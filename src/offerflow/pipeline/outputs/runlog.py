"""The run's log file: every log record of a run in ``run.log``, one JSON object per line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from offerflow.errors import OutputError
from offerflow.pipeline.outputs.sinks import FILE_MODE

__all__ = ["JsonLines", "run_log"]


# the fields of a record (its ``extra=``) written out when it has them: the task, or the
# member(s), endpoint, attempt, outcome and request id of a failed HTTP attempt
_FIELDS = ("task", "member_id", "member_ids", "endpoint", "attempt", "outcome", "request_id")


class JsonLines(logging.Formatter):
    """One JSON object per record, with the run id (when known) and any task, member or
    attempt the record names."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self._run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._run_id is not None:
            document["run_id"] = self._run_id
        for key in _FIELDS:
            if hasattr(record, key):
                document[key] = getattr(record, key)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


@contextlib.contextmanager
def run_log(run_dir: Path, *, mode: int = FILE_MODE) -> Iterator[None]:
    """Copy every log record of INFO and above into ``run_dir/run.log`` while in the block.

    The file (appended to when it exists: a resumed run) has exactly ``mode``, whatever the umask.
    """
    path = run_dir / "run.log"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # os.open's mode is masked by the umask, and ignored if it exists
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror}", path=path) from exc
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLines(run_dir.name))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
