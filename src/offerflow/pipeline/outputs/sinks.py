"""Sinks: result tables written incrementally in committed chunks, and files written atomically.

A chunk or a file is written under a temporary name and renamed into place, so a crash never leaves
a half-written file under a final name. Every file gets the permission bits it is given (by default
:data:`FILE_MODE`, its owner's only) before it has any content, whatever the process's umask; so do
the directories the sinks make (:data:`DIR_MODE`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from offerflow.errors import OutputError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PARTS",
    "ChunkedTable",
    "RequestLog",
    "atomic_write",
    "make_dir",
    "write_json",
]

#: the directory of a run where tables keep their committed chunks while the run goes
PARTS = ".parts"
#: permission bits of the files a run writes unless its config says otherwise: member data is
#: personal data, readable by its owner only
FILE_MODE = 0o600
#: permission bits of the directories a run makes unless its config says otherwise
DIR_MODE = 0o700


def atomic_write(path: Path, write: Callable[[Path], object], *, mode: int = FILE_MODE) -> None:
    """Call ``write`` on a temporary path beside ``path``, then rename it into place.

    The temporary file is made with ``mode`` before ``write`` opens it (a writer that opens an
    existing file keeps its mode), and given ``mode`` again before the rename (for a writer that
    replaces the file), so the file never has other bits under either name.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _create(tmp, mode)
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        # polars reports a failed write (a full disk, a file size limit) as its own error
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OutputError(f"cannot write: {reason}", path=path) from exc


def _create(path: Path, mode: int) -> None:
    """Create (or empty) the file at ``path`` with exactly ``mode``; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is masked by the umask
    finally:
        os.close(fd)


def make_dir(path: Path, mode: int = DIR_MODE, *, exist_ok: bool = False) -> None:
    """Make the directory ``path`` (its parent must exist) with exactly ``mode``."""
    path.mkdir(mode=mode, exist_ok=exist_ok)
    os.chmod(path, mode)  # mkdir's mode is masked by the umask


def write_json(path: Path, document: Mapping[str, Any], *, mode: int = FILE_MODE) -> None:
    """Write a JSON document atomically, keys in the order given, with a final newline."""
    text = json.dumps(document, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


class ChunkedTable:
    """A table appended to row by row and committed to disk in chunks.

    A chunk is committed every ``chunk_rows`` rows or ``commit_every_s`` seconds, whichever
    comes first, as ``<parts_dir>/<name>-NNNNN.parquet``; chunks already there (an earlier,
    interrupted session of the same run) are kept and numbered after. :meth:`finish` merges every
    chunk into one Parquet file; :meth:`discard_parts` removes the chunks once everything that
    depends on them is written. Files get ``file_mode``, directories ``dir_mode``.
    """

    def __init__(
        self,
        parts_dir: Path,
        name: str,
        schema: Mapping[str, pl.DataType],
        *,
        chunk_rows: int,
        commit_every_s: float = 2.0,
        file_mode: int = FILE_MODE,
        dir_mode: int = DIR_MODE,
    ) -> None:
        self.name = name
        self.schema = pl.Schema(dict(schema))
        self.chunk_rows = chunk_rows
        self.commit_every_s = commit_every_s
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.rows = 0
        self._parts_dir = parts_dir
        self._parts = sorted(self._parts_dir.glob(f"{name}-*.parquet"))
        self._columns: dict[str, list[Any]] = {column: [] for column in self.schema}
        self._appenders = [(column, values.append) for column, values in self._columns.items()]
        self._first = self._columns[self.schema.names()[0]]
        self._last_commit = time.monotonic()

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row (missing columns are null); commits a chunk when one is due."""
        get = row.get
        for column, append in self._appenders:
            append(get(column))
        self._appended()

    def append_frame(self, frame: pl.DataFrame) -> None:
        """Commit ``frame``'s rows as chunks of their own (its columns are a subset of the
        table's, the rest null), after the rows appended so far."""
        self.flush()
        full = frame.select(
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in self.schema.items()
        )
        for chunk in full.iter_slices(self.chunk_rows):
            self._commit(chunk.write_parquet)
        self.rows += frame.height

    def _appended(self) -> None:
        self.rows += 1
        if len(self._first) >= self.chunk_rows or (
            time.monotonic() - self._last_commit >= self.commit_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the rows appended since the last commit as one chunk file."""
        self._last_commit = time.monotonic()
        if not self._first:
            return
        frame = pl.DataFrame(self._columns, schema=self.schema, strict=False)
        for values in self._columns.values():
            values.clear()
        self._commit(frame.write_parquet)

    def adopt(self, path: Path) -> None:
        """Take an earlier session's final file in as the newest committed chunk."""
        if path.exists():
            self._commit(lambda tmp: os.replace(path, tmp))

    def committed(self) -> pl.LazyFrame:
        """Every committed row, chunk after chunk (flush first to include pending rows)."""
        return self._final(
            pl.scan_parquet(self._parts) if self._parts else pl.LazyFrame(schema=self.schema)
        )

    def finish(
        self, target: Path, *, sort_by: str | None = None, unique_by: str | None = None
    ) -> None:
        """Commit what is pending and merge every chunk into the Parquet file ``target`` (its
        directory is made if need be).

        With ``unique_by``, a key committed more than once keeps its latest row.
        """
        self.flush()
        table = self.committed()
        if unique_by is not None:
            table = _latest_rows(table, unique_by)
        if sort_by is not None:
            table = table.sort(sort_by, maintain_order=True)
        try:
            make_dir(target.parent, self.dir_mode, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create: {exc.strerror}", path=target.parent) from exc
        atomic_write(target, table.sink_parquet, mode=self.file_mode)

    def discard_parts(self) -> None:
        """Remove the committed chunks (after finish and everything else is written)."""
        for part in self._parts:
            part.unlink(missing_ok=True)
        self._parts.clear()
        with contextlib.suppress(OSError):
            self._parts_dir.rmdir()  # only when no other table's chunks are left
        if self._parts_dir.parent.name == PARTS:
            with contextlib.suppress(OSError):
                self._parts_dir.parent.rmdir()  # ... and no other partition's

    def _commit(self, write: Callable[[Path], object]) -> None:
        try:
            if self._parts_dir.parent.name == PARTS:
                make_dir(self._parts_dir.parent, self.dir_mode, exist_ok=True)
            make_dir(self._parts_dir, self.dir_mode, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create: {exc.strerror}", path=self._parts_dir) from exc
        number = int(self._parts[-1].stem.rsplit("-", 1)[1]) + 1 if self._parts else 0
        part = self._parts_dir / f"{self.name}-{number:05d}.parquet"
        atomic_write(part, write, mode=self.file_mode)
        self._parts.append(part)

    def _final(self, table: pl.LazyFrame) -> pl.LazyFrame:
        """The committed rows as they go into the final file; subclasses may convert columns."""
        return table


def _latest_rows(table: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """``table`` without the rows whose key comes again later (the latest row of a key stays).

    The rows to drop are found from the key column alone: a polars ``unique`` over the whole
    table would hold it several times over, and a run that was never resumed has none.
    """
    keys = table.select(key).collect()
    stale = keys.with_row_index("_row").filter(~pl.col(key).is_last_distinct()).get_column("_row")
    if stale.is_empty():
        return table
    return table.with_row_index("_row").filter(~pl.col("_row").is_in(stale.implode())).drop("_row")


class RequestLog(ChunkedTable):
    """The requests table: one row per HTTP attempt (an ``AttemptSink`` for the model client)."""

    SCHEMA: Mapping[str, pl.DataType] = {
        "member_id": pl.String(),
        "members": pl.Int32(),
        "endpoint": pl.String(),
        "attempt": pl.Int32(),
        "request_id": pl.String(),
        "status": pl.Int32(),
        "started_at": pl.Float64(),
        "latency_ms": pl.Float64(),
        "error": pl.String(),
    }

    def __init__(
        self,
        parts_dir: Path,
        *,
        chunk_rows: int = 65536,
        file_mode: int = FILE_MODE,
        dir_mode: int = DIR_MODE,
    ) -> None:
        super().__init__(
            parts_dir,
            "requests",
            self.SCHEMA,
            chunk_rows=chunk_rows,
            file_mode=file_mode,
            dir_mode=dir_mode,
        )

    def add(
        self,
        *,
        member_id: str,
        members: int = 1,
        endpoint: str,
        attempt: int,
        request_id: str | None = None,
        status: int | None,
        started_at: float,
        latency_ms: float,
        error: str | None,
    ) -> None:
        """Record one HTTP attempt; ``request_id`` is its ``X-Request-ID`` header as sent,
        ``started_at`` seconds since the epoch."""
        columns = self._columns
        columns["member_id"].append(member_id)
        columns["members"].append(members)
        columns["endpoint"].append(endpoint)
        columns["attempt"].append(attempt)
        columns["request_id"].append(request_id)
        columns["status"].append(status)
        columns["started_at"].append(started_at)
        columns["latency_ms"].append(latency_ms)
        columns["error"].append(error)
        self._appended()

    def adopt(self, path: Path) -> None:
        """Take an earlier session's final file in, ``started_at`` back in epoch seconds."""
        if path.exists():
            table = pl.read_parquet(path)
            seconds = pl.col("started_at").dt.epoch("us") / 1_000_000
            self._commit(table.with_columns(seconds).write_parquet)
            path.unlink()

    def _final(self, table: pl.LazyFrame) -> pl.LazyFrame:
        """``started_at`` as a UTC timestamp (kept as epoch seconds while running: cheaper)."""
        return table.with_columns(
            # rounded, not truncated: a resume converts back and forth without drifting
            (pl.col("started_at") * 1_000_000)
            .round()
            .cast(pl.Int64)
            .cast(pl.Datetime("us", "UTC"))
            .alias("started_at")
        )
