"""Too many rejects stop a run, naming the reasons with a hint each; no usable row warns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from offerflow.errors import InputError
from offerflow.pipeline.inputs import check_rejects, describe_rejects, read_inputs
from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS, ReadResult, read_transactions

WriteCsv = Callable[..., Path]
ROW = "A,2023-05-06 07:08:09,buy,100,1.0"


def _check(
    result: ReadResult,
    path: Path,
    as_of: datetime,
    limit: float = 0.5,
    *,
    timestamp_format: str | None = None,
    sample: int | None = None,
) -> None:
    check_rejects(
        result,
        limit=limit,
        path=path,
        columns=DEFAULT_COLUMNS,
        timestamp_format=timestamp_format,
        as_of=as_of,
        sample=sample,
    )


@pytest.mark.parametrize(
    ("rejected", "limit", "stops"),
    [(2, 0.5, False), (3, 0.5, True), (1, 0.0, True), (0, 0.0, False), (4, 1.0, False)],
    ids=["at the limit", "above it", "any above 0", "none at 0", "all at 1"],
)
def test_the_input_stops_only_above_the_limit(
    write_csv: WriteCsv, as_of: datetime, rejected: int, limit: float, stops: bool
) -> None:
    lines = [f"M{i},bogus,buy,1,1" for i in range(rejected)]
    lines += [f"M{i}{ROW[1:]}" for i in range(rejected, 4)]
    path = write_csv(*lines)
    result = read_transactions(path, as_of=as_of)

    if stops:
        with pytest.raises(InputError, match=rf"{rejected} of 4 rows are rejected") as raised:
            _check(result, path, as_of, limit)
        assert raised.value.path == path
        assert raised.value.exit_code == 2
    else:
        _check(result, path, as_of, limit)


def test_a_timestamp_format_that_matches_no_row_names_it_and_quotes_a_value(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    path = write_csv(ROW, "B,2023-05-01 10:00:00,gift,1,1", "C,,buy,1,1")
    result = read_transactions(path, as_of=as_of, timestamp_format="%d/%m/%Y %H:%M")

    with pytest.raises(InputError) as raised:
        _check(result, path, as_of, timestamp_format="%d/%m/%Y %H:%M")

    assert str(raised.value).splitlines() == [
        f"{path}: 3 of 3 rows are rejected (100.0%), above input.max_reject_rate (50.0%):",
        "  2 of 3 rows bad_timestamp: does input.timestamp_format '%d/%m/%Y %H:%M' match "
        "'2023-05-06 07:08:09'?",
        "  1 of 3 rows missing_field:ts: is input.columns.ts ('lastTransactionUtcTs') the "
        "column that holds it? (e.g. line 4)",
    ]


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("A,06/05/2023,buy,1,1", "'06/05/2023' is not ISO 8601 (2023-05-01 10:00:00)"),
        ("A,2024-02-01 00:00:00,buy,1,1", "'2024-02-01 00:00:00' is after the as-of, 2024-01-10"),
        ("A,2023-05-06,refund,1,1", "'refund' is not buy, gift or redeem: does input.type_aliases"),
        (
            "A,2023-05-06,buy,1,abc",
            "'abc' is not a number: is input.columns.revenue ('lastTransactionRevenueUSD')",
        ),
        (",2023-05-06,buy,1,1", "is input.columns.member_id ('memberId') the column that holds"),
        ('A"x,2023-05-06,buy,1,1', "a quote inside an unquoted field, or text after a closing"),
        (f"A,{'9' * 50},buy,1,1", f"'{'9' * 40}…' is not ISO 8601"),
    ],
    ids=["bad timestamp", "future", "unknown type", "bad number", "no id", "malformed", "long"],
)
def test_each_reason_has_a_hint_quoting_the_file(
    write_csv: WriteCsv, as_of: datetime, line: str, hint: str
) -> None:
    result = read_transactions(write_csv(line), as_of=as_of)
    (reason,) = describe_rejects(
        result, columns=DEFAULT_COLUMNS, timestamp_format=None, as_of=as_of
    )
    assert reason.startswith(f"1 of 1 rows {result.rejects['reason'][0]}: ")
    assert hint in reason


def test_bytes_that_are_not_utf8_say_so(tmp_path: Path, as_of: datetime) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        f"{','.join(DEFAULT_COLUMNS.values())}\n".encode() + b"Ren\xe9,2023-05-06,buy,1,1\n"
    )
    (reason,) = describe_rejects(
        read_transactions(path, as_of=as_of),
        columns=DEFAULT_COLUMNS,
        timestamp_format=None,
        as_of=as_of,
    )
    assert reason == (
        "1 of 1 rows bad_encoding:member_id: the file is not utf-8 text (e.g. line 2): "
        "set input.csv.encoding to the file's (e.g. 'cp1252')"
    )


def test_duplicates_across_files_name_the_file(tmp_path: Path, as_of: datetime) -> None:
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(f"{','.join(DEFAULT_COLUMNS.values())}\n{ROW}\n")
    (reason,) = describe_rejects(
        read_inputs(tmp_path / "*.csv", as_of=as_of),
        columns=DEFAULT_COLUMNS,
        timestamp_format=None,
        as_of=as_of,
    )
    assert f"(e.g. {tmp_path / 'b.csv'} line 2): is some data in the input twice?" in reason


def test_the_three_most_frequent_reasons_are_named_most_frequent_first(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    lines = ["A,,buy,1,1"] * 1 + ["A,bogus,buy,1,1"] * 4 + ["A,2023-05-06,x,1,1"] * 3
    lines += [f"A{i},2023-05-06,buy,x,1" for i in range(2)]
    result = read_transactions(write_csv(*lines), as_of=as_of)
    reasons = describe_rejects(result, columns=DEFAULT_COLUMNS, timestamp_format=None, as_of=as_of)
    assert [r.split(":")[0] for r in reasons] == [
        "4 of 10 rows bad_timestamp",
        "3 of 10 rows unknown_type",
        "2 of 10 rows bad_number",
    ]


def test_a_sample_says_so(write_csv: WriteCsv, as_of: datetime) -> None:
    path = write_csv(*["A,bogus,buy,1,1"] * 5)
    result = read_transactions(path, as_of=as_of, rows=3)
    with pytest.raises(InputError, match=r"in a sample \(each file's first 3 rows\), 3 of 3 rows"):
        _check(result, path, as_of, sample=3)


def test_no_usable_row_within_the_limit_warns_with_the_reasons(
    write_csv: WriteCsv, as_of: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv("A,2030-01-01,buy,1,1", "B,2030-01-02,buy,1,1")
    with caplog.at_level(logging.WARNING):
        _check(read_transactions(path, as_of=as_of), path, as_of, limit=1.0)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"{path}: no row of 2 can be used: every member gets no_transactions; 2 of 2 rows "
        "future_timestamp: '2030-01-01' is after the as-of, 2024-01-10 23:59:59 UTC: is --as-of "
        "right?"
    )


def test_an_input_without_rows_warns(
    write_csv: WriteCsv, as_of: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv()
    with caplog.at_level(logging.WARNING):
        _check(read_transactions(path, as_of=as_of), path, as_of)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: the input has no rows: the run has no member"
    ]


def test_a_usable_input_passes_in_silence(
    write_csv: WriteCsv, as_of: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(ROW, "B,,,,")
    with caplog.at_level(logging.DEBUG):
        _check(read_transactions(path, as_of=as_of), path, as_of)
    assert caplog.records == []
