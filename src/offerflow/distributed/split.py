"""The split: an input's rows sorted into one bucket per partition, on the cluster.

One task per input file reads it chunk by chunk (the reader's own sources, so a file reads as
it does in one process, lines and all) and writes each chunk's rows to the buckets of their
partitions, as text: ``.split/f0003/p00007-0000.parquet`` holds rows of file 3 that belong to
partition 7. A partition then reads its buckets, file after file, as that file's rows. The task
also counts each row's reject reason (duplicates aside), so that a run can stop on too many
rejects before any model call, and keeps a few rejected rows of each reason to quote.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from offerflow.config import CsvFormat
from offerflow.pipeline.inputs import (
    CANONICAL,
    FileSource,
    TextChunks,
    partition_of,
    reject_reasons,
)
from offerflow.pipeline.outputs.rundir import SPLIT
from offerflow.pipeline.storage import fetch, fetch_matching, is_remote, join, publish_tree

__all__ = [
    "SPLIT",
    "BucketSource",
    "SplitResult",
    "SplitTask",
    "bucket_sources",
    "fetch_buckets",
    "split_file",
]

_T = TypeVar("_T")

#: the directory of a run's buckets
#: rows a bucket file holds at most (a partition's rows of a file come in several)
_BUCKET_ROWS = 200_000
#: rejected rows of each reason a split keeps, to quote
_EXAMPLES = 3
#: the columns of a bucket: a text chunk's
_BUCKET_SCHEMA = pl.Schema(
    {"line": pl.Int64(), **dict.fromkeys(CANONICAL, pl.String()), "problem": pl.String()}
)


@dataclass(frozen=True, slots=True)
class SplitTask:
    """One input file to split into ``partitions`` buckets under ``run_location``."""

    index: int
    #: the file: a local path or an object store URL
    location: str
    columns: Mapping[str, str]
    fmt: str | None
    partitions: int
    run_location: str
    as_of: datetime
    type_aliases: Mapping[str, str] = field(default_factory=dict)
    timestamp_format: str | None = None
    csv: CsvFormat = field(default_factory=CsvFormat)
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class SplitResult:
    """What a split found in its file: rows, usable rows (duplicates aside), reject reasons."""

    index: int
    location: str
    rows: int
    usable: int
    rejects_by_reason: dict[str, int]
    #: a few rejected rows of each reason, as ``rejects.csv`` has them
    examples: list[dict[str, Any]]


def split_file(task: SplitTask) -> SplitResult:
    """Split one input file into its partitions' buckets (runs on a worker)."""
    with tempfile.TemporaryDirectory(prefix="offerflow-split-") as scratch:
        local = Path(scratch)
        path = fetch(task.location, local) if is_remote(task.location) else Path(task.location)
        remote = is_remote(task.run_location)
        root = local / "buckets" if remote else Path(task.run_location) / SPLIT
        directory = root / f"f{task.index:04d}"
        source = FileSource(path, dict(task.columns), task.fmt, csv=task.csv)  # type: ignore[arg-type]
        result = source.read(lambda chunks: _split(task, chunks, directory))
        if remote:
            publish_tree(root, join(task.run_location, SPLIT))
    return result


def _split(task: SplitTask, chunks: TextChunks, directory: Path) -> SplitResult:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("p*.parquet"):  # an earlier attempt's: this one rewrites all
        stale.unlink()
    pending: dict[int, list[pl.DataFrame]] = defaultdict(list)
    sizes: Counter[int] = Counter()
    written: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows = usable = 0

    def flush(partition: int) -> None:
        frame = pl.concat(pending.pop(partition))
        frame.write_parquet(directory / f"p{partition:05d}-{written[partition]:04d}.parquet")
        written[partition] += 1
        sizes[partition] = 0

    for text in chunks():
        rows += text.height
        found = reject_reasons(
            text,
            as_of=task.as_of,
            type_aliases=task.type_aliases,
            timestamp_format=task.timestamp_format,
            timezone=task.timezone,
            csv=task.csv,
        )
        usable += int(found.is_null().sum())
        for reason, count in found.drop_nulls().value_counts().iter_rows():
            reasons[reason] += count
            if len(examples[reason]) < _EXAMPLES:
                picked = text.filter(found == reason).head(_EXAMPLES - len(examples[reason]))
                examples[reason] += _as_rejects(picked, task.columns, reason)
        keyed = text.with_columns(partition_of(text.get_column("member_id"), task.partitions))
        for (partition,), frame in keyed.partition_by("partition", as_dict=True).items():
            index = int(partition)
            pending[index].append(frame.drop("partition"))
            sizes[index] += frame.height
            if sizes[index] >= _BUCKET_ROWS:
                flush(index)
    for partition in list(pending):
        flush(partition)
    return SplitResult(
        task.index,
        task.location,
        rows,
        usable,
        dict(reasons),
        [example for found in examples.values() for example in found],
    )


def _as_rejects(
    rows: pl.DataFrame, columns: Mapping[str, str], reason: str
) -> list[dict[str, Any]]:
    """Rejected rows as ``rejects.csv`` names their values (the file's column names)."""
    return [
        {"line": row["line"], **{columns[name]: row[name] for name in CANONICAL}, "reason": reason}
        for row in rows.iter_rows(named=True)
    ]


@dataclass(frozen=True, slots=True)
class BucketSource:
    """One input file's rows of one partition, read from its buckets (a text source)."""

    #: the input file, as rejects name it
    name: str
    paths: tuple[Path, ...]

    def read(self, then: Callable[[TextChunks], _T]) -> _T:
        """Call ``then`` with the rows as text chunks, in the file's order."""

        def chunks() -> Iterator[pl.DataFrame]:
            frames = [pl.read_parquet(path) for path in self.paths]
            if not frames:  # the reader's first pass takes at least one chunk: its schema
                yield pl.DataFrame(schema=_BUCKET_SCHEMA)
            elif len(frames) == 1:
                yield frames[0]
            else:  # a file's rows were flushed in turn: one ordered chunk
                yield pl.concat(frames).sort("line")

        return then(chunks)


def fetch_buckets(run_location: str, run_dir: Path, partition: int, inputs: int) -> None:
    """Copy a partition's buckets from the run's object store into ``run_dir``'s split."""
    for index in range(inputs):
        directory = f"{SPLIT}/f{index:04d}"
        fetch_matching(join(run_location, directory), run_dir / directory, f"p{partition:05d}-")


def bucket_sources(split_dir: Path, partition: int, locations: Sequence[str]) -> list[BucketSource]:
    """The text sources of a partition: each input file's buckets of it, file after file."""
    return [
        BucketSource(
            location, tuple(sorted((split_dir / f"f{index:04d}").glob(f"p{partition:05d}-*")))
        )
        for index, location in enumerate(locations)
    ]
