"""Sinks commit chunks atomically and merge them into complete files."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import polars as pl
import pytest

from offerflow.errors import OutputError
from offerflow.pipeline.outputs.runlog import run_log
from offerflow.pipeline.outputs.sinks import ChunkedTable, RequestLog, atomic_write, write_json
from tests.pipeline.outputs.conftest import SetUmask

SCHEMA = {"member_id": pl.String(), "value": pl.Float64()}
#: where a partition keeps its committed chunks, and its part of a table, as a run lays them out
CHUNKS = Path(".parts") / "p00000"
PART = "part-00000.parquet"


def test_rows_are_committed_in_chunks_while_appending(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2)
    for i in range(5):
        table.append({"member_id": f"m{i}", "value": float(i)})
    parts = sorted((tmp_path / CHUNKS).glob("offers-*.parquet"))
    assert len(parts) == 2
    assert pl.read_parquet(parts[0]).get_column("member_id").to_list() == ["m0", "m1"]
    assert not (tmp_path / "offers.parquet").exists()


def test_finish_merges_every_chunk_sorted_and_discard_removes_the_parts(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2)
    for member_id in ["c", "a", "d", "b", "e"]:
        table.append({"member_id": member_id})
    table.finish(tmp_path / "offers.parquet" / PART, sort_by="member_id")
    assert len(list((tmp_path / CHUNKS).iterdir())) == 3
    table.discard_parts()
    assert [p.name for p in (tmp_path / "offers.parquet").iterdir()] == [PART]
    merged = pl.read_parquet(tmp_path / "offers.parquet")
    assert merged.get_column("member_id").to_list() == ["a", "b", "c", "d", "e"]
    assert merged.schema == pl.Schema(SCHEMA)
    assert not (tmp_path / ".parts").exists()  # the partition's chunks, and .parts with them


def test_discard_leaves_the_chunks_of_another_table_and_another_partition(tmp_path: Path) -> None:
    offers = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=1)
    requests = RequestLog(tmp_path / CHUNKS, chunk_rows=1)
    other = ChunkedTable(tmp_path / ".parts" / "p00001", "offers", SCHEMA, chunk_rows=1)
    for table in (offers, other):
        table.append({"member_id": "a"})
    requests.add(member_id="a", endpoint="ats", attempt=1, status=200, started_at=0.0,
                 latency_ms=1.0, error=None)  # fmt: skip
    offers.finish(tmp_path / "offers.parquet" / PART)
    offers.discard_parts()
    assert [p.name for p in (tmp_path / CHUNKS).iterdir()] == ["requests-00000.parquet"]
    requests.finish(tmp_path / "requests.parquet" / PART)
    requests.discard_parts()
    assert [p.name for p in (tmp_path / ".parts").iterdir()] == ["p00001"]
    assert [p.name for p in (tmp_path / ".parts" / "p00001").iterdir()] == ["offers-00000.parquet"]


def test_finish_keeps_the_latest_committed_row_of_a_key(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2)
    rows = [("b", 1.0), ("a", 1.0), ("b", 2.0), ("c", 1.0), ("a", 2.0), ("b", 3.0), ("d", 1.0)]
    for member_id, value in rows:
        table.append({"member_id": member_id, "value": value})
    table.finish(tmp_path / "offers.parquet" / PART, sort_by="member_id", unique_by="member_id")
    expected = [("a", 2.0), ("b", 3.0), ("c", 1.0), ("d", 1.0)]
    assert pl.read_parquet(tmp_path / "offers.parquet").rows() == expected


def test_a_frame_is_committed_after_the_rows_so_far_with_the_other_columns_null(
    tmp_path: Path,
) -> None:
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2)
    table.append({"member_id": "a", "value": 1.0})
    table.append_frame(pl.DataFrame({"member_id": ["b", "c", "d"]}))
    assert table.rows == 4
    table.finish(tmp_path / "offers.parquet" / PART)
    rows = pl.read_parquet(tmp_path / "offers.parquet").rows()
    assert rows == [("a", 1.0), ("b", None), ("c", None), ("d", None)]
    assert len(list((tmp_path / CHUNKS).iterdir())) == 3  # the row, then 2 + 1


def test_an_empty_table_still_has_its_schema(tmp_path: Path) -> None:
    target = tmp_path / "offers.parquet" / PART
    ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=10).finish(target)
    assert pl.read_parquet(tmp_path / "offers.parquet").schema == pl.Schema(SCHEMA)


def test_request_log_keeps_started_at_as_a_utc_timestamp(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / CHUNKS, chunk_rows=2)
    for attempt in (1, 2, 3):
        log.add(
            member_id="m",
            endpoint="ats",
            attempt=attempt,
            status=200,
            started_at=1_700_000_000.5,
            latency_ms=1.25,
            error=None,
        )
    log.finish(tmp_path / "requests.parquet" / PART)
    table = pl.read_parquet(tmp_path / "requests.parquet")
    assert table.height == 3
    assert table.schema["started_at"] == pl.Datetime("us", "UTC")
    assert table.schema["latency_ms"] == pl.Float64
    assert str(table.item(0, "started_at")) == "2023-11-14 22:13:20.500000+00:00"


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"

    def half_write(tmp: Path) -> None:
        tmp.write_text("{")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device") as caught:
        atomic_write(target, half_write)
    assert caught.value.path == target
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_write_json_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}


def test_a_path_that_cannot_be_written_is_an_output_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not-a-directory") as caught:
        write_json(blocker / "summary.json", {})
    assert caught.value.path == blocker / "summary.json"


# Permissions: member data is personal data ------------------------------------------------------

#: (dir_mode, file_mode) of the tests, and umasks that would give other bits
MODES = [(0o700, 0o600), (0o750, 0o640)]
UMASKS = [0o000, 0o077]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("umask_value", UMASKS)
@pytest.mark.parametrize(("dir_mode", "file_mode"), MODES)
def test_chunks_their_directory_and_the_final_files_have_the_modes_whatever_the_umask(
    tmp_path: Path, umask: SetUmask, umask_value: int, dir_mode: int, file_mode: int
) -> None:
    umask(umask_value)
    modes = {"file_mode": file_mode, "dir_mode": dir_mode}
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2, **modes)
    requests = RequestLog(tmp_path / CHUNKS, chunk_rows=1, **modes)
    for i in range(5):
        table.append({"member_id": f"m{i}", "value": float(i)})
        requests.add(member_id=f"m{i}", endpoint="ats", attempt=1, status=200,
                     started_at=0.0, latency_ms=1.0, error=None)  # fmt: skip
    parts = sorted((tmp_path / CHUNKS).iterdir())
    assert len(parts) == 7
    assert _mode(tmp_path / ".parts") == _mode(tmp_path / CHUNKS) == dir_mode
    assert {part.name: _mode(part) for part in parts} == dict.fromkeys(
        [part.name for part in parts], file_mode
    )
    table.finish(tmp_path / "offers.parquet" / PART)
    requests.finish(tmp_path / "requests.parquet" / PART)
    datasets = ["offers.parquet", "requests.parquet"]
    assert {name: _mode(tmp_path / name) for name in datasets} == dict.fromkeys(datasets, dir_mode)
    finals = [f"{name}/{PART}" for name in datasets]
    assert {name: _mode(tmp_path / name) for name in finals} == dict.fromkeys(finals, file_mode)


@pytest.mark.parametrize("umask_value", UMASKS)
def test_an_adopted_final_file_becomes_a_chunk_with_the_file_mode(
    tmp_path: Path, umask: SetUmask, umask_value: int
) -> None:
    earlier = tmp_path / "offers.parquet" / PART
    earlier.parent.mkdir()
    pl.DataFrame({"member_id": ["a"], "value": [1.0]}).write_parquet(earlier)
    earlier.chmod(0o644)
    umask(umask_value)
    table = ChunkedTable(tmp_path / CHUNKS, "offers", SCHEMA, chunk_rows=2)
    table.adopt(earlier)
    (part,) = (tmp_path / CHUNKS).iterdir()
    assert _mode(part) == 0o600
    assert not earlier.exists()


@pytest.mark.parametrize("umask_value", UMASKS)
@pytest.mark.parametrize("file_mode", [0o600, 0o640])
def test_an_atomic_write_has_the_mode_under_both_names_while_and_after_writing(
    tmp_path: Path, umask: SetUmask, umask_value: int, file_mode: int
) -> None:
    umask(umask_value)
    target = tmp_path / "rejects.csv"
    seen: list[int] = []

    def write(tmp: Path) -> None:
        seen.append(_mode(tmp))  # the file exists, with the mode, before the writer opens it
        pl.DataFrame({"line": [1]}).write_csv(tmp)

    atomic_write(target, write, mode=file_mode)
    assert seen == [file_mode]
    assert _mode(target) == file_mode
    write_json(tmp_path / "summary.json", {"a": 1}, mode=file_mode)
    assert _mode(tmp_path / "summary.json") == file_mode


def test_an_atomic_write_does_not_follow_a_symlink_at_the_temporary_name(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep")
    (tmp_path / ".summary.json.tmp").symlink_to(elsewhere)
    with pytest.raises(OutputError, match=r"summary\.json"):
        write_json(tmp_path / "summary.json", {"a": 1})
    assert elsewhere.read_text() == "keep"


@pytest.mark.parametrize("umask_value", UMASKS)
def test_the_run_log_has_the_mode_new_or_appended_to(
    tmp_path: Path, umask: SetUmask, umask_value: int
) -> None:
    umask(umask_value)
    log = logging.getLogger("offerflow.test")
    with run_log(tmp_path):
        log.warning("first session")
    assert _mode(tmp_path / "run.log") == 0o600
    (tmp_path / "run.log").chmod(0o644)
    with run_log(tmp_path, mode=0o640):
        log.warning("second session")
    assert _mode(tmp_path / "run.log") == 0o640
    messages = [json.loads(line)["message"] for line in (tmp_path / "run.log").open()]
    assert messages == ["first session", "second session"]
