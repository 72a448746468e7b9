"""The transaction reader: parsing, reject reasons, duplicates, the row ledger, unusable files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal, assert_series_equal

from offerflow.errors import InputError
from offerflow.pipeline.features import compute_features
from offerflow.pipeline.inputs import generate_transactions, parsing, sources, write_transactions
from offerflow.pipeline.inputs.parsing import REASONS
from offerflow.pipeline.inputs.reader import (
    DEFAULT_COLUMNS,
    ReadResult,
    parse_as_of,
    read_inputs,
    read_transactions,
)
from tests.reference import expected_results

WriteCsv = Callable[..., Path]
HEADER = ",".join(DEFAULT_COLUMNS.values())
ROW = "A,2023-05-06 07:08:09,buy,100,1.0"
TRANSACTIONS_SCHEMA = pl.Schema(
    {
        "line": pl.Int64(),
        "member_id": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "type": pl.String(),
        "points": pl.Float64(),
        "revenue": pl.Float64(),
    }
)
REJECTS_SCHEMA = pl.Schema(
    {"line": pl.Int64} | dict.fromkeys(DEFAULT_COLUMNS.values(), pl.String) | {"reason": pl.String}
)


def utc(year: int, month: int, day: int, *clock: int) -> datetime:
    hour, minute, second, microsecond = (*clock, 0, 0, 0, 0)[:4]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def read_one(write_csv: WriteCsv, line: str, as_of: datetime, **kwargs: object) -> ReadResult:
    return read_transactions(write_csv(line), as_of=as_of, **kwargs)  # type: ignore[arg-type]


def reason_of(write_csv: WriteCsv, line: str, as_of: datetime) -> str | None:
    result = read_one(write_csv, line, as_of)
    return None if result.rows_rejected == 0 else str(result.rejects["reason"].item())


# --- parse_as_of -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-10", utc(2024, 1, 10, 23, 59, 59, 999999)),
        ("2024-02-29", utc(2024, 2, 29, 23, 59, 59, 999999)),
        (" 2024-01-10 ", utc(2024, 1, 10, 23, 59, 59, 999999)),
    ],
)
def test_as_of_date_means_the_end_of_that_utc_day(text: str, expected: datetime) -> None:
    assert parse_as_of(text) == expected
    assert parse_as_of(text).tzinfo == UTC


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2024, 1, 10, 12), utc(2024, 1, 10, 12)),
        (datetime(2024, 1, 10, 12, tzinfo=timezone(timedelta(hours=2))), utc(2024, 1, 10, 10)),
        (datetime(2024, 1, 10, 12), utc(2024, 1, 10, 12)),
    ],
    ids=["utc", "offset", "naive"],
)
def test_no_as_of_means_now_in_utc(now: datetime, expected: datetime) -> None:
    moment = parse_as_of(None, now=now)
    assert moment == expected
    assert moment.tzinfo == UTC


def test_no_as_of_and_no_clock_means_the_current_time() -> None:
    before = datetime.now(UTC)
    moment = parse_as_of(None)
    assert before <= moment <= datetime.now(UTC)


@pytest.mark.parametrize(
    "text", ["2024-1-10", "20240110", "2024-02-30", "2024-01-10T00:00:00", "yesterday", ""]
)
def test_as_of_other_than_a_date_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="as-of") as raised:
        parse_as_of(text)
    assert repr(text) in str(raised.value)


# --- parsing usable rows -----------------------------------------------------------------------


def test_usable_row_becomes_a_canonical_transaction(write_csv: WriteCsv, as_of: datetime) -> None:
    result = read_one(write_csv, " A1 ,2023-05-06 07:08:09, Buy ,-1200, 3.5", as_of)

    expected = pl.DataFrame(
        {
            "line": [2],
            "member_id": ["A1"],
            "ts": [utc(2023, 5, 6, 7, 8, 9)],
            "type": ["buy"],
            "points": [-1200.0],
            "revenue": [3.5],
        },
        schema=TRANSACTIONS_SCHEMA,
    )
    assert_frame_equal(result.transactions, expected)
    assert result.rejects.schema == REJECTS_SCHEMA
    assert result.rejects.is_empty()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-05-06 07:08:09", utc(2023, 5, 6, 7, 8, 9)),
        ("2023-05-06T07:08:09", utc(2023, 5, 6, 7, 8, 9)),
        ("2023-05-06T07:08:09Z", utc(2023, 5, 6, 7, 8, 9)),
        ("2023-05-06t07:08:09z", utc(2023, 5, 6, 7, 8, 9)),
        ("2023-05-06T07:08:09.5Z", utc(2023, 5, 6, 7, 8, 9, 500000)),
        ("2023-05-06T07:08:09.123456789Z", utc(2023, 5, 6, 7, 8, 9, 123456)),
        ("2023-05-06T07:08:09+02:00", utc(2023, 5, 6, 5, 8, 9)),
        ("2023-05-06T23:08:09-05:30", utc(2023, 5, 7, 4, 38, 9)),
        ("2023-05-06 07:08:09.250+01:00", utc(2023, 5, 6, 6, 8, 9, 250000)),
        ("2023-05-06", utc(2023, 5, 6)),
        ("  2023-05-06 07:08:09  ", utc(2023, 5, 6, 7, 8, 9)),
    ],
)
def test_timestamp_forms_are_read_as_utc(
    write_csv: WriteCsv, as_of: datetime, text: str, expected: datetime
) -> None:
    result = read_one(write_csv, f"A,{text},buy,100,1.0", as_of)
    assert result.transactions["ts"].to_list() == [expected]


@pytest.mark.parametrize("text", ["buy", "BUY", "Gift", " Gift ", " redeem ", "\tREDEEM"])
def test_type_is_case_insensitive_and_stripped(
    write_csv: WriteCsv, as_of: datetime, text: str
) -> None:
    result = read_one(write_csv, f"A,2023-05-06 07:08:09,{text},100,1.0", as_of)
    assert result.transactions["type"].to_list() == [text.strip().lower()]


@pytest.mark.parametrize(
    ("aliases", "text", "expected"),
    [
        ({"purchase": "buy"}, "PURCHASE", "buy"),
        ({" Present ": "gift"}, "present", "gift"),
        ({"purchase": "buy"}, "buy", "buy"),
    ],
)
def test_type_aliases_map_a_partners_spelling(
    write_csv: WriteCsv, as_of: datetime, aliases: dict[str, str], text: str, expected: str
) -> None:
    result = read_one(
        write_csv, f"A,2023-05-06 07:08:09,{text},100,1.0", as_of, type_aliases=aliases
    )
    assert result.transactions["type"].to_list() == [expected]


@pytest.mark.parametrize("aliases", [{"purchase": "refund"}, {"buy": "gift"}])
def test_type_alias_must_name_a_type(
    write_csv: WriteCsv, as_of: datetime, aliases: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="alias"):
        read_one(write_csv, "A,2023-05-06 07:08:09,buy,100,1.0", as_of, type_aliases=aliases)


# --- reject reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(",2023-05-06 07:08:09,buy,100,1.0", "missing_member_id", id="empty id"),
        pytest.param("   ,2023-05-06 07:08:09,buy,100,1.0", "missing_member_id", id="blank id"),
        pytest.param(",,,,", "missing_member_id", id="id before fields"),
        pytest.param('B5"x,,,,', "malformed_row", id="stray quote before all"),
        pytest.param('"B"x,2023-05-06 07:08:09,buy,100,1.0', "malformed_row", id="after quote"),
        pytest.param("A,,buy,100,1.0", "missing_field:ts", id="ts"),
        pytest.param("A,2023-05-06 07:08:09,,100,1.0", "missing_field:type", id="type"),
        pytest.param("A,2023-05-06 07:08:09,buy,,1.0", "missing_field:points", id="points"),
        pytest.param("A,2023-05-06 07:08:09,buy,100,", "missing_field:revenue", id="revenue"),
        pytest.param('A,2023-05-06 07:08:09,buy," ",1.0', "missing_field:points", id="blank"),
        pytest.param("A,,,,", "missing_field:ts", id="first missing field"),
        pytest.param("A,2023-05-06 07:08:09,, ,", "missing_field:type", id="type before points"),
        pytest.param("A,bogus,,100,1.0", "missing_field:type", id="missing before bad"),
        pytest.param("A,yesterday,buy,100,1.0", "bad_timestamp", id="word"),
        pytest.param("A,2023-5-6 7:8:9,buy,100,1.0", "bad_timestamp", id="unpadded"),
        pytest.param("A,2023-02-30 00:00:00,buy,100,1.0", "bad_timestamp", id="no such day"),
        pytest.param("A,2023-05-06 24:00:00,buy,100,1.0", "bad_timestamp", id="hour 24"),
        pytest.param("A,2023-05-06T07:08:09+0200,buy,100,1.0", "bad_timestamp", id="offset hhmm"),
        pytest.param("A,2023-05-06 07:08,buy,100,1.0", "bad_timestamp", id="no seconds"),
        pytest.param("A,06/05/2023 07:08:09,buy,100,1.0", "bad_timestamp", id="other order"),
        pytest.param("A,2023-05-06 07:08:09Z+01:00,buy,100,1.0", "bad_timestamp", id="two zones"),
        pytest.param("A,bogus,refund,x,y", "bad_timestamp", id="timestamp before type"),
        pytest.param("A,2024-01-11 00:00:00,buy,100,1.0", "future_timestamp", id="future"),
        pytest.param("A,2030-01-01,refund,x,y", "future_timestamp", id="future before type"),
        pytest.param("A,2023-05-06 07:08:09,refund,100,1.0", "unknown_type", id="unknown"),
        pytest.param("A,2023-05-06 07:08:09,buyer,x,y", "unknown_type", id="type before number"),
        pytest.param("A,2023-05-06 07:08:09,buy,abc,1.0", "bad_number:points", id="word points"),
        pytest.param("A,2023-05-06 07:08:09,buy,nan,1.0", "bad_number:points", id="nan"),
        pytest.param("A,2023-05-06 07:08:09,buy,NaN,1.0", "bad_number:points", id="NaN"),
        pytest.param("A,2023-05-06 07:08:09,buy,Infinity,1.0", "bad_number:points", id="Infinity"),
        pytest.param("A,2023-05-06 07:08:09,buy,inf,1.0", "bad_number:points", id="inf"),
        pytest.param("A,2023-05-06 07:08:09,buy,-inf,1.0", "bad_number:points", id="-inf"),
        pytest.param("A,2023-05-06 07:08:09,buy,1e400,1.0", "bad_number:points", id="overflow"),
        pytest.param('A,2023-05-06 07:08:09,buy,"1,000",1.0', "bad_number:points", id="comma"),
        pytest.param("A,2023-05-06 07:08:09,buy,100,NaN", "bad_number:revenue", id="revenue"),
        pytest.param("A,2023-05-06 07:08:09,buy,100,inf", "bad_number:revenue", id="revenue inf"),
        pytest.param("A,2023-05-06 07:08:09,buy,100,abc", "bad_number:revenue", id="revenue abc"),
        pytest.param("A,2023-05-06 07:08:09,buy,x,y", "bad_number:points", id="points first"),
    ],
)
def test_unusable_row_is_rejected_with_the_first_applicable_reason(
    write_csv: WriteCsv, as_of: datetime, line: str, reason: str
) -> None:
    assert reason_of(write_csv, line, as_of) == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2024-01-10T23:59:59.999999Z", None),
        ("2024-01-11T00:00:00Z", "future_timestamp"),
        ("2024-01-11T01:59:59.999999+02:00", None),
        ("2024-01-11T02:00:00+02:00", "future_timestamp"),
    ],
    ids=["at as-of", "1us after", "at as-of with offset", "1us after with offset"],
)
def test_a_row_at_as_of_is_used_and_one_a_microsecond_later_is_future(
    write_csv: WriteCsv, as_of: datetime, text: str, reason: str | None
) -> None:
    assert reason_of(write_csv, f"A,{text},buy,100,1.0", as_of) == reason


# --- the ledger, rejects and members -----------------------------------------------------------

MIXED = (
    "A,2023-01-01 00:00:00,buy,100,1.0",
    "B,,,,",
    ",2023-01-01 00:00:00,gift,100,1.0",
    "C,2023-01-01 00:00:00,refund,100,1.0",
    " A ,2023-01-02 00:00:00,redeem,-100,0.0",
    "D,2025-01-01 00:00:00,buy,100,1.0",
    "E,2023-01-01 00:00:00,buy,abc,1.0",
    "  ,,,,",
    'F,"",buy,100,1.0',
)


def test_ledger_balances_and_counts_rejects_by_reason(write_csv: WriteCsv, as_of: datetime) -> None:
    result = read_transactions(write_csv(*MIXED), as_of=as_of)

    assert (result.rows_in, result.rows_used, result.rows_rejected) == (9, 2, 7)
    assert result.rejects_by_reason == {
        "bad_number:points": 1,
        "future_timestamp": 1,
        "missing_field:ts": 2,
        "missing_member_id": 2,
        "unknown_type": 1,
    }
    assert list(result.rejects_by_reason) == sorted(result.rejects_by_reason)


def test_rejects_keep_line_raw_values_and_source_column_names(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    result = read_transactions(write_csv(*MIXED), as_of=as_of)

    expected = pl.DataFrame(
        [
            (3, "B", None, None, None, None, "missing_field:ts"),
            (4, None, "2023-01-01 00:00:00", "gift", "100", "1.0", "missing_member_id"),
            (5, "C", "2023-01-01 00:00:00", "refund", "100", "1.0", "unknown_type"),
            (7, "D", "2025-01-01 00:00:00", "buy", "100", "1.0", "future_timestamp"),
            (8, "E", "2023-01-01 00:00:00", "buy", "abc", "1.0", "bad_number:points"),
            (9, "  ", None, None, None, None, "missing_member_id"),
            (10, "F", None, "buy", "100", "1.0", "missing_field:ts"),
        ],
        schema=REJECTS_SCHEMA,
        orient="row",
    )
    assert_frame_equal(result.rejects, expected)
    assert result.transactions["line"].to_list() == [2, 6]


def test_members_are_all_ids_of_the_input_sorted_rejected_rows_included(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    result = read_transactions(write_csv(*MIXED), as_of=as_of)
    assert result.members.to_list() == ["A", "B", "C", "D", "E", "F"]
    assert result.members.name == "member_id"


@pytest.mark.parametrize("end", ["\n", "", "\r\n"], ids=["LF", "no line end", "CRLF"])
def test_header_only_file_has_no_rows_and_the_right_schemas(
    tmp_path: Path, as_of: datetime, end: str
) -> None:
    path = tmp_path / "partner.csv"
    path.write_text(HEADER + end, encoding="utf-8")

    result = read_transactions(path, as_of=as_of)

    assert (result.rows_in, result.rows_used, result.rows_rejected) == (0, 0, 0)
    assert result.transactions.schema == TRANSACTIONS_SCHEMA
    assert result.rejects.schema == REJECTS_SCHEMA
    assert result.members.dtype == pl.String
    assert result.members.is_empty()
    assert result.rejects_by_reason == {}


# --- exact duplicates ---------------------------------------------------------------------------


def test_exact_copy_of_a_usable_row_is_a_duplicate_and_the_first_is_used(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    result = read_transactions(write_csv(ROW, f"B{ROW[1:]}", ROW, ROW), as_of=as_of)

    assert result.transactions["line"].to_list() == [2, 3]
    assert result.rejects["line"].to_list() == [4, 5]
    assert result.rejects_by_reason == {"duplicate_row": 2}
    assert result.rejects.row(0) == (4, *ROW.split(","), "duplicate_row")
    assert (result.rows_in, result.rows_used, result.rows_rejected) == (4, 2, 2)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(f" {ROW}", id="leading space in id"),
        pytest.param(ROW.replace("buy", "BUY"), id="type spelled otherwise"),
        pytest.param(ROW.replace("1.0", "1.00"), id="same number written otherwise"),
        pytest.param(ROW.replace(" 07:08:09", "T07:08:09Z"), id="same instant written otherwise"),
    ],
)
def test_only_identical_raw_values_make_a_duplicate(
    write_csv: WriteCsv, as_of: datetime, other: str
) -> None:
    result = read_transactions(write_csv(ROW, other), as_of=as_of)
    assert result.rows_used == 2


def test_copy_of_a_rejected_row_is_rejected_for_the_same_reason(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    bad = ROW.replace("buy", "refund")
    result = read_transactions(write_csv(bad, bad, ",,,,", ",,,,"), as_of=as_of)
    assert result.rejects["reason"].to_list() == ["unknown_type"] * 2 + ["missing_member_id"] * 2


def test_columns_the_mapping_does_not_name_are_not_compared(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    path = write_csv(f"{ROW},first", f"{ROW},second", header=f"{HEADER},note")
    result = read_transactions(path, as_of=as_of)
    assert result.rejects_by_reason == {"duplicate_row": 1}


def test_duplicates_are_found_across_batches(
    write_csv: WriteCsv, as_of: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 40)  # about a row a batch
    other = f"B{ROW[1:]}"

    result = read_transactions(write_csv(ROW, other, ROW, ",,,,", other, ROW), as_of=as_of)

    assert result.transactions["line"].to_list() == [2, 3]
    assert result.rejects.select("line", "reason").rows() == [
        (4, "duplicate_row"),
        (5, "missing_member_id"),
        (6, "duplicate_row"),
        (7, "duplicate_row"),
    ]
    assert result.rejects.row(0) == (4, *ROW.split(","), "duplicate_row")


def test_rows_of_equal_hash_are_duplicates_only_when_their_raw_values_are_equal(
    write_csv: WriteCsv, as_of: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"B{ROW[1:]}"
    lookalikes = (ROW.replace("1.0", "1.00"), f" {ROW}", ROW.replace("buy", "Buy"))
    path = write_csv(ROW, other, ROW, *lookalikes, ",,,,", other, ",,,,", ROW)
    expected = read_transactions(path, as_of=as_of)
    monkeypatch.setattr(parsing, "_row_hash", lambda: pl.lit(0, pl.UInt64))  # all rows collide

    result = read_transactions(path, as_of=as_of)

    assert_frame_equal(result.transactions, expected.transactions)
    assert_frame_equal(result.rejects, expected.rejects)
    assert_series_equal(result.members, expected.members)
    assert result.transactions["line"].to_list() == [2, 3, 5, 6, 7]
    assert result.rejects_by_reason == {"duplicate_row": 3, "missing_member_id": 2}


def test_duplicate_is_the_last_reason_checked() -> None:
    assert REASONS[-1] == "duplicate_row"
    assert len(set(REASONS)) == len(REASONS)


# --- unusable files ----------------------------------------------------------------------------

FOUR = HEADER.rpartition(",")[0]  # the header without lastTransactionRevenueUSD


@pytest.mark.parametrize(
    ("content", "fragments", "line", "column"),
    [
        pytest.param(b"", ["empty file"], None, None, id="empty file"),
        pytest.param(b"\n\n", ["empty file"], None, None, id="newlines"),
        pytest.param(b" \t\r\n  \n\f", ["empty file"], None, None, id="whitespace"),
        pytest.param(b"\xef\xbb\xbf\r\n", ["empty file"], None, None, id="byte-order mark"),
        pytest.param(
            f"\ufeff{HEADER}\n{ROW}\n".encode("utf-16-le"), ["UTF-16"], None, None, id="UTF-16"
        ),
        pytest.param(
            f"{FOUR}\n".encode(),
            ["missing column(s) 'lastTransactionRevenueUSD'", f"the header has {FOUR.split(',')}"],
            1,
            "lastTransactionRevenueUSD",
            id="one missing column",
        ),
        pytest.param(
            b"memberId,ts,lastTransactionType,lastTransactionPointsBought\nA,1,buy,1\n",
            ["'lastTransactionUtcTs', 'lastTransactionRevenueUSD'", "'ts'"],
            1,
            None,
            id="every missing column named",
        ),
        pytest.param(
            f"{HEADER},note,memberId\n{ROW},x,B\n".encode(),
            ["the header names 'memberId' more than once: which column is it? rename one"],
            1,
            "memberId",
            id="a mapped column twice",
        ),
        pytest.param(
            f"{HEADER.lower()}\n".encode(),
            ["spelled differently? 'memberid' for 'memberId'"],
            1,
            None,
            id="case",
        ),
        pytest.param(
            f"\n\r\n{FOUR}\n".encode(),
            ["missing"],
            3,
            "lastTransactionRevenueUSD",
            id="blank lines before the header",
        ),
        pytest.param(
            f"{HEADER.replace(',', ';')}\n".encode(), ["delimited by ';'"], 1, None, id="semicolons"
        ),
        pytest.param(
            f"{HEADER.replace(',', chr(9))}\n".encode(), ["delimited by a tab"], 1, None, id="tabs"
        ),
        pytest.param(
            f"{HEADER.replace(',', '|')}\n{ROW.replace(',', '|')}\n".encode(),
            ["delimited by '|'"],
            1,
            None,
            id="pipes",
        ),
        pytest.param(
            f"{HEADER}\n{ROW}\n{ROW},extra\n{ROW}\n".encode(),
            ["this row has 6 fields, the header 5"],
            3,
            None,
            id="ragged",
        ),
        pytest.param(
            f"{HEADER}\r\n{ROW}\r\n\r\nB,\xe9t\xe9,buy,1,1,\r\n".encode("latin-1"),
            ["6 fields"],
            4,
            None,
            id="ragged after a blank line and non-UTF-8 bytes",
        ),
        pytest.param(
            f'{HEADER}\n"A\nB"{ROW[1:]}\n{ROW},\n'.encode(),
            ["6 fields"],
            3,
            None,
            id="ragged after a field spanning lines",
        ),
        pytest.param(
            f'{HEADER}\n{ROW}\nB,"2023-01-01,buy,1,1\n{ROW}\n'.encode(),
            ["a quoted field of this row is never closed"],
            3,
            None,
            id="open quote",
        ),
    ],
)
def test_unusable_csv_file_is_an_input_error_naming_file_line_and_column(
    tmp_path: Path,
    as_of: datetime,
    content: bytes,
    fragments: list[str],
    line: int | None,
    column: str | None,
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(content)

    with pytest.raises(InputError) as raised:
        read_transactions(path, as_of=as_of)

    error = raised.value
    assert (error.path, error.line, error.column) == (path, line, column)
    assert str(error).startswith(f"{path}{'' if line is None else f':{line}'}")
    for fragment in fragments:
        assert fragment in str(error)
    assert error.exit_code == 2


def test_a_column_it_does_not_map_may_be_named_twice(tmp_path: Path, as_of: datetime) -> None:
    path = tmp_path / "partner.csv"
    path.write_text(f"{HEADER},note,note\n{ROW},x,y\n")

    read = read_transactions(path, as_of=as_of)

    assert (read.rows_in, read.rows_used) == (1, 1)


def test_comma_separated_file_missing_a_column_gets_no_delimiter_hint(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    with pytest.raises(InputError) as raised:
        read_transactions(write_csv(header="memberId"), as_of=as_of)
    assert "delimited" not in str(raised.value)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_absent_file_is_an_input_error(tmp_path: Path, as_of: datetime, fmt: str) -> None:
    path = tmp_path / f"absent.{fmt}"
    with pytest.raises(InputError, match="cannot read the file: No such file") as raised:
        read_transactions(path, as_of=as_of)
    assert raised.value.path == path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_directory_is_an_input_error(tmp_path: Path, as_of: datetime, fmt: str) -> None:
    path = tmp_path / f"partner.{fmt}"
    path.mkdir()
    with pytest.raises(InputError, match="directory") as raised:
        read_transactions(path, as_of=as_of)
    assert raised.value.path == path


def test_a_path_through_a_file_is_an_input_error(write_csv: WriteCsv, as_of: datetime) -> None:
    path = write_csv(ROW) / "members.csv"  # a file is not a folder, not even for root
    with pytest.raises(InputError, match="cannot read the file: Not a directory"):
        read_transactions(path, as_of=as_of)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER.encode() + b"\n", "not a Parquet file"),
        (b"", "empty file"),
        (b"PAR1 and then not Parquet at all", "cannot read the file as parquet"),
    ],
    ids=["csv", "empty", "truncated"],
)
def test_file_that_is_not_parquet_is_an_input_error(
    tmp_path: Path, as_of: datetime, content: bytes, message: str
) -> None:
    path = tmp_path / "partner.parquet"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as raised:
        read_transactions(path, as_of=as_of)
    assert raised.value.path == path


def test_parquet_file_missing_a_column_is_named_without_a_line(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.parquet"
    pl.DataFrame({name: ["1"] for name in FOUR.split(",")}).write_parquet(path)

    with pytest.raises(InputError, match="the file has the columns") as raised:
        read_transactions(path, as_of=as_of)
    assert (raised.value.line, raised.value.column) == (None, "lastTransactionRevenueUSD")


def test_parquet_column_that_is_not_text_or_numbers_is_named(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.parquet"
    frame = pl.DataFrame({name: ["1"] for name in DEFAULT_COLUMNS.values()})
    frame.with_columns(pl.concat_list("lastTransactionType")).write_parquet(path)

    with pytest.raises(InputError, match="holds List") as raised:
        read_transactions(path, as_of=as_of)
    assert raised.value.column == "lastTransactionType"


@pytest.mark.parametrize(
    "columns",
    [
        {"member_id": "memberId"},
        {**DEFAULT_COLUMNS, "extra": "x"},
        {**DEFAULT_COLUMNS, "ts": "memberId"},
    ],
    ids=["incomplete", "unknown name", "one column twice"],
)
def test_column_mapping_must_map_each_canonical_name_to_its_own_column(
    write_csv: WriteCsv, as_of: datetime, columns: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="column mapping"):
        read_transactions(write_csv(), as_of=as_of, columns=columns)


# --- CSV dialect, encodings and formats --------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "member_ids"),
    [
        pytest.param(b"\xef\xbb\xbf" + f"{HEADER}\n{ROW}\n".encode(), ["A"], id="BOM"),
        pytest.param(f"{HEADER}\r\n{ROW}\r\nB{ROW[1:]}\r\n".encode(), ["A", "B"], id="CRLF"),
        pytest.param(f'{HEADER}\n"A,1"{ROW[1:]}\n'.encode(), ["A,1"], id="quoted comma"),
        pytest.param(f'{HEADER}\n"A ""x"""{ROW[1:]}\n'.encode(), ['A "x"'], id="quoted quote"),
        pytest.param(f"{HEADER}\n{ROW}".encode(), ["A"], id="no final newline"),
        pytest.param(
            f'{HEADER}\r\n"A,\r\nB"{ROW[1:]}\r\n'.encode(), ["A,\r\nB"], id="comma and CRLF"
        ),
        pytest.param(
            f'{HEADER}\n"A é, ""x""\n会员"{ROW[1:]}\n'.encode(),
            ['A é, "x"\n会员'],
            id="non-ASCII, comma, quotes and newline",
        ),
    ],
)
def test_csv_dialect(
    tmp_path: Path, as_of: datetime, content: bytes, member_ids: list[str]
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(content)

    result = read_transactions(path, as_of=as_of)

    assert result.transactions["member_id"].to_list() == member_ids
    assert result.transactions["revenue"].to_list() == [1.0] * len(member_ids)


#: LF, what becomes of it converted to CRLF once and twice, and classic Mac OS's bare CR
LINE_ENDS = {"LF": b"\n", "CRLF": b"\r\n", "CR CR LF": b"\r\r\n", "CR": b"\r"}


def _assert_reads_alike(result: ReadResult, expected: ReadResult) -> None:
    assert (result.rows_in, result.rows_used) == (expected.rows_in, expected.rows_used)
    assert_frame_equal(result.transactions, expected.transactions)
    assert_frame_equal(result.rejects, expected.rejects)
    assert_series_equal(result.members, expected.members)


def _split_after_a_cr(data: bytes, near: int) -> int:
    """A batch size whose batches end between the CR and the LF of a line end near ``near``."""
    return data.find(b"\r\n", near) + 1 or near


@pytest.mark.parametrize("end", LINE_ENDS.values(), ids=LINE_ENDS.keys())
@pytest.mark.parametrize("batches", ["split after a CR", "whole"])
def test_the_real_file_reads_alike_with_any_line_ends(
    tmp_path: Path,
    member_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_of: datetime,
    end: bytes,
    batches: str,
) -> None:
    lf = member_data.read_bytes().replace(b"\r\n", b"\n")
    expected_path = tmp_path / "lf.csv"
    expected_path.write_bytes(lf)
    expected = read_transactions(expected_path, as_of=as_of)
    path = tmp_path / "converted.csv"
    path.write_bytes(converted := lf.replace(b"\n", end))
    chunk_bytes = _split_after_a_cr(converted, 20_000) if batches != "whole" else 1 << 22
    monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk_bytes)

    result = read_transactions(path, as_of=as_of)

    _assert_reads_alike(result, expected)
    assert (result.rows_in, result.rows_used, result.rows_rejected) == (4335, 4225, 110)


@pytest.mark.parametrize("end", LINE_ENDS.values(), ids=LINE_ENDS.keys())
@pytest.mark.parametrize("chunk_bytes", [97, 1 << 22])
def test_generated_data_reads_alike_with_any_line_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_of: datetime, end: bytes, chunk_bytes: int
) -> None:
    expected_path = tmp_path / "lf.csv"
    write_transactions(generate_transactions(60, seed=1), expected_path)
    expected = read_transactions(expected_path, as_of=as_of)
    assert expected.rows_rejected > 0
    path = tmp_path / "converted.csv"
    path.write_bytes(expected_path.read_bytes().replace(b"\n", end))
    monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk_bytes)

    _assert_reads_alike(read_transactions(path, as_of=as_of), expected)


def test_a_row_with_a_stray_quote_is_rejected_and_every_other_row_read(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    path = write_csv(ROW, f'B5"x{ROW[1:]}', f"C{ROW[1:]}", f'"D"x{ROW[1:]}', f"E{ROW[1:]}")

    result = read_transactions(path, as_of=as_of)

    assert result.transactions["line"].to_list() == [2, 4, 6]
    assert result.rejects.select("line", "memberId", "reason").rows() == [
        (3, 'B5"x', "malformed_row"),
        (5, "Dx", "malformed_row"),
    ]
    assert result.rejects.row(0)[2:6] == tuple(ROW.split(",")[1:])
    # where a malformed record's fields begin and end is a guess: its id is no member
    assert result.members.to_list() == ["A", "C", "E"]
    assert (result.rows_in, result.rows_used, result.rows_rejected) == (5, 3, 2)


def test_line_counts_records_when_a_quoted_field_spans_lines(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    path = write_csv('"A\nB",2023-05-06 07:08:09,buy,100,1.0', "C,bogus,buy,100,1.0")
    result = read_transactions(path, as_of=as_of)

    assert result.transactions["member_id"].to_list() == ["A\nB"]
    assert result.rejects["line"].to_list() == [3]  # the third record, the fourth physical line


def test_blank_lines_before_the_header_count_in_line_numbers(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(f"\n\r\n{HEADER}\n{ROW}\nB,bogus,buy,1,1\n".encode())

    result = read_transactions(path, as_of=as_of)

    assert result.transactions["line"].to_list() == [4]
    assert result.rejects["line"].to_list() == [5]


def test_file_name_is_not_a_pattern(tmp_path: Path, as_of: datetime) -> None:
    path = tmp_path / "partner[1]*.csv"
    path.write_text(f"{HEADER}\n{ROW}\n", encoding="utf-8")
    assert read_transactions(path, as_of=as_of).rows_used == 1


def test_non_utf8_bytes_spoil_only_their_rows(tmp_path: Path, as_of: datetime) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(
        HEADER.encode()
        + b"\nA\xff,2023-05-06 07:08:09,buy,100,1.0"
        + b"\nB,2023-05-06 07:08:09,buy,1\xe900,1.0"
        + b"\nC,2023-05-06 07:08:09,gift,100,1.0\n"
    )

    result = read_transactions(path, as_of=as_of)

    assert result.transactions["member_id"].to_list() == ["C"]
    assert result.rejects.select(
        "line", "memberId", "lastTransactionPointsBought", "reason"
    ).rows() == [
        (2, "A\ufffd", "100", "bad_encoding:member_id"),
        (3, "B", "1\ufffd00", "bad_encoding:points"),
    ]
    # an id that is not UTF-8 is no member: B's row is rejected for its points, B is one
    assert result.members.to_list() == ["B", "C"]


def test_two_ids_spoilt_alike_are_neither_merged_nor_members(
    tmp_path: Path, as_of: datetime
) -> None:
    # Read lossily, both ids were NNNN\ufffd\ufffd01: one member, the second row its duplicate.
    path = tmp_path / "partner.csv"
    path.write_bytes(
        f"{HEADER}\n{ROW}\n".encode()
        + b"NNNN\xff\xfe01,2023-05-01 10:00:00,buy,100,1.0\n"
        + b"NNNN\xfe\xff01,2023-05-01 10:00:00,buy,100,1.0\n"
        + f"B{ROW[1:]}\n".encode()
    )

    result = read_transactions(path, as_of=as_of)

    assert result.transactions["member_id"].to_list() == ["A", "B"]
    assert result.rejects.select("line", "reason").rows() == [
        (3, "bad_encoding:member_id"),
        (4, "bad_encoding:member_id"),
    ]
    assert result.members.to_list() == ["A", "B"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b"A\xe9,2023-05-06 07:08:09,buy,100,1.0", "bad_encoding:member_id", id="id"),
        pytest.param(b"A,2023-05-06\xa007:08:09,buy,100,1.0", "bad_encoding:ts", id="ts"),
        pytest.param(b"A,2023-05-06 07:08:09,b\xfcy,100,1.0", "bad_encoding:type", id="type"),
        pytest.param(b"A,2023-05-06 07:08:09,buy,100,1.\x80", "bad_encoding:revenue", id="revenue"),
        pytest.param(b"A,,b\xfcy,,", "bad_encoding:type", id="before a missing field"),
        pytest.param(b"A\xe9,bogus,b\xfcy,x,1", "bad_encoding:member_id", id="first column"),
        pytest.param(
            b'A"\xe9,2023-05-06 07:08:09,buy,100,1.0', "malformed_row", id="malformed first"
        ),
        pytest.param(
            b"A\xe2\x82,2023-05-06 07:08:09,buy,100,1.0", "bad_encoding:member_id", id="cut"
        ),
        pytest.param("A\ufffd,2023-05-06 07:08:09,buy,100,1.0".encode(), None, id="U+FFFD is text"),
    ],
)
def test_a_value_that_is_not_utf8_is_rejected_naming_its_column(
    tmp_path: Path, as_of: datetime, line: bytes, reason: str | None
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(f"{HEADER}\n".encode() + line + b"\n")
    result = read_transactions(path, as_of=as_of)
    assert result.rejects["reason"].to_list() == ([] if reason is None else [reason])


def test_a_u_fffd_of_the_file_stays_text_beside_bytes_that_are_not_utf8(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(f"{HEADER}\nA\ufffd{ROW[1:]}\n".encode() + b"B\xff" + f"{ROW[1:]}\n".encode())
    result = read_transactions(path, as_of=as_of)
    assert result.transactions["member_id"].to_list() == ["A\ufffd"]
    assert result.rejects.select("memberId", "reason").rows() == [
        ("B\ufffd", "bad_encoding:member_id")
    ]


def test_bytes_that_are_not_utf8_in_a_column_not_mapped_spoil_nothing(
    write_csv: WriteCsv, tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.csv"
    path.write_bytes(f"note,{HEADER}\n".encode() + b"caf\xe9," + f"{ROW}\n".encode())
    result = read_transactions(path, as_of=as_of)
    assert (result.rows_used, result.rows_rejected) == (1, 0)


def test_blank_line_is_a_row_without_member_id(write_csv: WriteCsv, as_of: datetime) -> None:
    result = read_transactions(write_csv(ROW, "", f"B{ROW[1:]}"), as_of=as_of)
    assert (result.rows_in, result.rows_used) == (3, 2)
    assert result.rejects_by_reason == {"missing_member_id": 1}


def test_partner_column_names_are_mapped_and_other_columns_ignored(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    columns = {"member_id": "id", "ts": "when", "type": "kind", "points": "pts", "revenue": "usd"}
    path = write_csv(
        "x,2023-05-06 07:08:09,B,buy,100,1.0", "y,,C,buy,,", header="note,when,id,kind,pts,usd"
    )

    result = read_transactions(path, as_of=as_of, columns=columns)

    assert result.transactions.select("member_id", "points").rows() == [("B", 100.0)]
    assert result.rejects.columns == ["line", "id", "when", "kind", "pts", "usd", "reason"]
    assert result.rejects.row(0) == (3, "C", None, "buy", None, None, "missing_field:ts")


@pytest.mark.parametrize("suffix", [".parquet", ".data"])
def test_parquet_file_reads_like_the_csv_file(
    tmp_path: Path, write_csv: WriteCsv, as_of: datetime, suffix: str
) -> None:
    csv_path = write_csv(*MIXED)
    parquet_path = tmp_path / f"partner{suffix}"
    pl.read_csv(csv_path, infer_schema=False).write_parquet(parquet_path)

    from_csv = read_transactions(csv_path, as_of=as_of)
    from_parquet = read_transactions(
        parquet_path, as_of=as_of, fmt="parquet" if suffix != ".parquet" else None
    )

    assert_frame_equal(from_parquet.transactions, from_csv.transactions)
    assert_frame_equal(from_parquet.rejects, from_csv.rejects)
    assert_series_equal(from_parquet.members, from_csv.members)


def test_parquet_file_without_rows_has_no_rows_and_the_right_schemas(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "partner.parquet"
    pl.DataFrame(schema=dict.fromkeys(DEFAULT_COLUMNS.values(), pl.String)).write_parquet(path)

    result = read_transactions(path, as_of=as_of)

    assert (result.rows_in, result.rows_used, result.rows_rejected) == (0, 0, 0)
    assert result.transactions.schema == TRANSACTIONS_SCHEMA
    assert result.rejects.schema == REJECTS_SCHEMA


def test_typed_parquet_columns_are_read_as_text_first(tmp_path: Path, as_of: datetime) -> None:
    path = tmp_path / "typed.parquet"
    pl.DataFrame(
        {
            "memberId": ["A", "B"],
            "lastTransactionUtcTs": [utc(2023, 5, 6, 7, 8, 9), utc(2025, 1, 1)],
            "lastTransactionType": ["buy", "gift"],
            "lastTransactionPointsBought": [100, 200],
            "lastTransactionRevenueUSD": [1.5, 2.0],
        }
    ).write_parquet(path)

    result = read_transactions(path, as_of=as_of)

    assert result.transactions.row(0) == (2, "A", utc(2023, 5, 6, 7, 8, 9), "buy", 100.0, 1.5)
    assert result.rejects["reason"].to_list() == ["future_timestamp"]


# --- several files (a glob) ---------------------------------------------------------------------


def _files(tmp_path: Path, *contents: tuple[str, ...]) -> Path:
    """Write one CSV file per tuple of data lines, in name order; returns their glob."""
    for index, lines in enumerate(contents):
        (tmp_path / f"part-{index}.csv").write_text(
            "".join(f"{line}\n" for line in (HEADER, *lines)), encoding="utf-8"
        )
    return tmp_path / "part-*.csv"


def test_a_row_repeating_one_of_an_earlier_file_is_a_duplicate_keeping_its_file_and_line(
    tmp_path: Path, as_of: datetime
) -> None:
    other = f"B{ROW[1:]}"
    pattern = _files(tmp_path, (ROW, other), (f"C{ROW[1:]}", ROW, ROW), (other,))

    result = read_inputs(pattern, as_of=as_of)

    assert result.transactions["member_id"].to_list() == ["A", "B", "C"]
    assert result.rejects.select("file", "line", "reason").rows() == [
        (str(tmp_path / "part-1.csv"), 3, "duplicate_row"),
        (str(tmp_path / "part-1.csv"), 4, "duplicate_row"),
        (str(tmp_path / "part-2.csv"), 2, "duplicate_row"),
    ]
    assert result.rejects.row(0)[2:] == (*ROW.split(","), "duplicate_row")
    assert (result.rows_in, result.rows_used, result.rows_rejected) == (6, 3, 3)


def test_several_files_keep_their_own_lines_and_their_order(
    tmp_path: Path, as_of: datetime
) -> None:
    late = "A,2023-05-06 07:08:09,gift,5,1.0"  # the same instant as ROW: the later file is later
    pattern = _files(tmp_path, (ROW, "B,,,,"), ("C,bogus,buy,1,1", late))

    result = read_inputs(pattern, as_of=as_of)

    assert result.rejects.select("file", "line", "reason").rows() == [
        (str(tmp_path / "part-0.csv"), 3, "missing_field:ts"),
        (str(tmp_path / "part-1.csv"), 2, "bad_timestamp"),
    ]
    lines = result.transactions["line"].to_list()
    assert lines == sorted(set(lines))
    assert result.transactions["type"].to_list() == ["buy", "gift"]
    assert result.members.to_list() == ["A", "B", "C"]


def test_a_pattern_no_file_matches_is_an_input_error(tmp_path: Path, as_of: datetime) -> None:
    with pytest.raises(InputError, match="no file matches") as raised:
        read_inputs(tmp_path / "none-*.csv", as_of=as_of)
    assert raised.value.path == tmp_path / "none-*.csv"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rows_reads_a_sample_of_the_first_rows(
    tmp_path: Path, write_csv: WriteCsv, as_of: datetime, suffix: str
) -> None:
    path = write_csv(*(f"M{i}{ROW[1:]}" for i in range(50)), "M0,bogus,buy,1,1")
    if suffix == ".parquet":
        path = tmp_path / "partner.parquet"
        pl.read_csv(
            write_csv(*(f"M{i}{ROW[1:]}" for i in range(50))), infer_schema=False
        ).write_parquet(path)

    result = read_transactions(path, as_of=as_of, rows=20)

    assert result.rows_in == 20
    assert result.transactions["member_id"].to_list() == [f"M{i}" for i in range(20)]


# --- a member with many transactions ----------------------------------------------------------

MANY = 10_000


def test_member_with_ten_thousand_transactions_gets_the_right_features(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    start = utc(2023, 12, 1)
    kinds = ("buy", "gift", "redeem")
    # Transaction i is at start + i minutes; written in a scrambled order (7919 is prime).
    big = [
        f"BIG,{start + timedelta(minutes=i):%Y-%m-%d %H:%M:%S},{kinds[i % 3]},{i},{i / 4}"
        for i in (j * 7919 % MANY for j in range(MANY))
    ]
    others = [
        "a,2024-01-10 12:00:00,buy,10,1.0",
        "a,2024-01-09 12:00:00,gift,30,3.0",
        "a,2024-01-10 12:00:00,buy,10,1.0",
        "b,2023-06-01 00:00:00,gift,20,2.0",
        "b,2023-06-02 00:00:00,redeem,-40,0.0",
        "c,,,,",
    ]
    path = write_csv(*big[:5000], *others, *big[5000:])

    result = read_transactions(path, as_of=as_of)
    features = compute_features(result.transactions, as_of=as_of)

    assert (result.rows_in, result.rows_used) == (MANY + 6, MANY + 4)
    assert result.rejects_by_reason == {"duplicate_row": 1, "missing_field:ts": 1}
    assert features["member_id"].to_list() == ["BIG", "a", "b"]
    assert features.row(0, named=True) == {
        "member_id": "BIG",
        "AVG_POINTS_BOUGHT": (MANY - 1) / 2,
        "AVG_REVENUE_USD": (MANY - 1) / 8,
        "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": MANY - 2.0,
        "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": (MANY - 2) / 4,
        "PCT_BUY_TRANSACTIONS": 3334 / MANY,
        "PCT_GIFT_TRANSACTIONS": 3333 / MANY,
        "PCT_REDEEM_TRANSACTIONS": 3333 / MANY,
        "DAYS_SINCE_LAST_TRANSACTION": 34,  # the last at 2023-12-07 22:39
    }
    assert features.row(1) == ("a", 20.0, 2.0, 20.0, 2.0, 0.5, 0.5, 0.0, 0)
    _rows_in, expected = expected_results(path, as_of.date())
    assert expected["c"] is None
    for row in features.iter_rows(named=True):
        want = expected[row.pop("member_id")]
        assert want is not None
        assert row == pytest.approx(want.features, rel=1e-12)


# --- properties (the row ledger's: test_ledger_properties.py) ----------------------------------


@settings(max_examples=60, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2023, 12, 31)),
    minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_timestamp_with_any_offset_is_the_same_instant_in_utc(
    tmp_path_factory: pytest.TempPathFactory, moment: datetime, minutes: int
) -> None:
    local = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    path = tmp_path_factory.mktemp("offset") / "partner.csv"
    path.write_text(f"{HEADER}\nA,{local.isoformat()},buy,1,1\n", encoding="utf-8")

    result = read_transactions(path, as_of=parse_as_of("2024-01-10"))

    assert result.transactions["ts"].to_list() == [local.astimezone(UTC)]
