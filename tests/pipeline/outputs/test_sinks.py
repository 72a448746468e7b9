"""Sinks commit chunks atomically and merge them into complete files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from offerflow.errors import OutputError
from offerflow.pipeline.outputs.sinks import ChunkedTable, RequestLog, atomic_write, write_json

SCHEMA = {"member_id": pl.String(), "value": pl.Float64()}


def test_rows_are_committed_in_chunks_while_appending(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path, "offers", SCHEMA, chunk_rows=2)
    for i in range(5):
        table.append({"member_id": f"m{i}", "value": float(i)})
    parts = sorted((tmp_path / ".parts").glob("offers-*.parquet"))
    assert len(parts) == 2
    assert pl.read_parquet(parts[0]).get_column("member_id").to_list() == ["m0", "m1"]
    assert not (tmp_path / "offers.parquet").exists()


def test_finish_merges_every_chunk_sorted_and_discard_removes_the_parts(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path, "offers", SCHEMA, chunk_rows=2)
    for member_id in ["c", "a", "d", "b", "e"]:
        table.append({"member_id": member_id})
    table.finish(("parquet", "csv"), sort_by="member_id")
    assert len(list((tmp_path / ".parts").iterdir())) == 3
    table.discard_parts()
    merged = pl.read_parquet(tmp_path / "offers.parquet")
    assert merged.get_column("member_id").to_list() == ["a", "b", "c", "d", "e"]
    assert merged.schema == pl.Schema(SCHEMA)
    assert pl.read_csv(tmp_path / "offers.csv").height == 5
    assert not (tmp_path / ".parts").exists()


def test_finish_keeps_the_latest_committed_row_of_a_key(tmp_path: Path) -> None:
    table = ChunkedTable(tmp_path, "offers", SCHEMA, chunk_rows=2)
    rows = [("b", 1.0), ("a", 1.0), ("b", 2.0), ("c", 1.0), ("a", 2.0), ("b", 3.0), ("d", 1.0)]
    for member_id, value in rows:
        table.append({"member_id": member_id, "value": value})
    table.finish(("parquet", "csv"), sort_by="member_id", unique_by="member_id")
    expected = [("a", 2.0), ("b", 3.0), ("c", 1.0), ("d", 1.0)]
    assert pl.read_parquet(tmp_path / "offers.parquet").rows() == expected
    assert pl.read_csv(tmp_path / "offers.csv").rows() == expected


def test_a_frame_is_committed_after_the_rows_so_far_with_the_other_columns_null(
    tmp_path: Path,
) -> None:
    table = ChunkedTable(tmp_path, "offers", SCHEMA, chunk_rows=2)
    table.append({"member_id": "a", "value": 1.0})
    table.append_frame(pl.DataFrame({"member_id": ["b", "c", "d"]}))
    assert table.rows == 4
    table.finish(("parquet",))
    rows = pl.read_parquet(tmp_path / "offers.parquet").rows()
    assert rows == [("a", 1.0), ("b", None), ("c", None), ("d", None)]
    assert len(list((tmp_path / ".parts").iterdir())) == 3  # the row, then 2 + 1


def test_an_empty_table_still_has_its_schema(tmp_path: Path) -> None:
    ChunkedTable(tmp_path, "offers", SCHEMA, chunk_rows=10).finish(("parquet",))
    assert pl.read_parquet(tmp_path / "offers.parquet").schema == pl.Schema(SCHEMA)


def test_request_log_keeps_started_at_as_a_utc_timestamp(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, chunk_rows=2)
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
    log.finish()
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
