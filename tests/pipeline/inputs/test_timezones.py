"""Local times: a partner's timestamps written without an offset in its own time zone
(``input.timezone``), read as the UTC instants they are, in one process and in a Dask split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from offerflow.config import DEFAULT_COLUMNS, CsvFormat
from offerflow.distributed.split import SplitTask, split_file
from offerflow.pipeline.inputs import generate_transactions, write_transactions
from offerflow.pipeline.inputs.reader import ReadResult, read_transactions, source_columns

NAMES = list(DEFAULT_COLUMNS.values())
BERLIN = "Europe/Berlin"


def assert_same_instants(local: pl.DataFrame, utc: pl.DataFrame, zone: str) -> None:
    """Transactions read from local times are those read from UTC, but for a time in the hour
    the clocks go through twice: written the second time, it reads as the first, an hour early."""
    assert_frame_equal(local.drop("ts"), utc.drop("ts"))
    for read, instant in zip(local.get_column("ts"), utc.get_column("ts"), strict=True):
        if read != instant:
            assert instant.astimezone(ZoneInfo(zone)).fold == 1  # the second of the two
            assert read == instant - timedelta(hours=1)


def _read(path: Path, as_of: datetime, **options: object) -> ReadResult:
    return read_transactions(path, as_of=as_of, **options)  # type: ignore[arg-type]


def _write(path: Path, stamps: list[str]) -> Path:
    """One buy per timestamp, members A, B, C, … in order."""
    rows = [f"{chr(65 + i)},{stamp},buy,1,1.0" for i, stamp in enumerate(stamps)]
    path.write_text("\n".join([",".join(NAMES), *rows]) + "\n")
    return path


@pytest.mark.parametrize("pattern", [None, "%d.%m.%Y %H:%M:%S"], ids=["iso", "strftime"])
def test_local_times_read_as_the_utc_instants_they_are(
    tmp_path: Path, as_of: datetime, pattern: str | None
) -> None:
    standard = tmp_path / "utc.csv"
    write_transactions(generate_transactions(120, seed=9), standard)
    local = tmp_path / "berlin.csv"
    written = pattern or "%Y-%m-%d %H:%M:%S"
    frame = generate_transactions(120, seed=9, timestamp_format=written, timezone=BERLIN)
    write_transactions(frame, local, CsvFormat())
    assert local.read_bytes() != standard.read_bytes()  # the same instants, other wall times
    expected = _read(standard, as_of)
    read = _read(local, as_of, timestamp_format=pattern, timezone=BERLIN)
    assert read.rows_in == expected.rows_in > 500
    assert_same_instants(read.transactions, expected.transactions, BERLIN)
    assert read.rejects_by_reason == expected.rejects_by_reason


def test_the_zone_gives_times_without_an_offset_their_instant_and_leaves_the_others(
    tmp_path: Path, as_of: datetime
) -> None:
    path = _write(
        tmp_path / "local.csv",
        [
            "2023-01-15 08:00:00",  # winter: UTC+1
            "2023-07-01 12:00:00",  # summer: UTC+2
            "2023-07-01",  # a bare date: local midnight
            "2023-07-01T12:00:00.5",  # ISO without an offset: local too
            "2023-07-01T12:00:00Z",  # an offset of its own wins
            "2023-07-01T12:00:00+05:00",
            "2023-10-29 02:30:00",  # the hour the clocks go through twice: its first time
            "2023-03-26 02:30:00",  # the hour the clocks skip: no such instant
        ],
    )
    read = _read(path, as_of, timezone=BERLIN)
    assert read.transactions.sort("member_id").get_column("ts").to_list() == [
        datetime(2023, 1, 15, 7, tzinfo=UTC),
        datetime(2023, 7, 1, 10, tzinfo=UTC),
        datetime(2023, 6, 30, 22, tzinfo=UTC),
        datetime(2023, 7, 1, 10, 0, 0, 500000, tzinfo=UTC),
        datetime(2023, 7, 1, 12, tzinfo=UTC),
        datetime(2023, 7, 1, 7, tzinfo=UTC),
        datetime(2023, 10, 29, 0, 30, tzinfo=UTC),
    ]
    assert read.rejects.select("memberId", "reason").rows() == [("H", "bad_timestamp")]
    in_utc = _read(path, as_of)  # the same file without the setting: the same texts as UTC
    assert in_utc.rows_used == 8
    assert datetime(2023, 1, 15, 8, tzinfo=UTC) in in_utc.transactions.get_column("ts").to_list()


def test_a_local_time_after_the_as_of_instant_is_in_the_future(tmp_path: Path) -> None:
    # 2024-01-11 00:30 in Berlin is 2024-01-10 23:30 UTC: before the end of the as-of day
    path = _write(tmp_path / "late.csv", ["2024-01-11 00:30:00", "2024-01-11 01:30:00"])
    as_of = datetime(2024, 1, 10, 23, 59, 59, 999999, tzinfo=UTC)
    read = _read(path, as_of, timezone=BERLIN)
    assert read.transactions.get_column("member_id").to_list() == ["A"]
    assert read.rejects.select("memberId", "reason").rows() == [("B", "future_timestamp")]


def test_a_split_on_the_cluster_reads_local_times_in_the_zone(
    tmp_path: Path, as_of: datetime
) -> None:
    path = _write(tmp_path / "local.csv", ["2023-07-01 12:00:00", "2023-03-26 02:30:00"])

    def split(zone: str | None, run: str) -> dict[str, int]:
        task = SplitTask(
            0,
            str(path),
            source_columns(DEFAULT_COLUMNS),
            None,
            2,
            str(tmp_path / run),
            as_of,
            timezone=zone,
        )
        return split_file(task).rejects_by_reason

    assert split(BERLIN, "berlin") == {"bad_timestamp": 1}  # the skipped hour
    assert split(None, "utc") == {}
