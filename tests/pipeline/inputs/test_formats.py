"""Partners' CSV formats: delimiter, quote, decimal mark, encoding and epoch timestamps, read
from the config alone, to the same rows as the standard file."""

from __future__ import annotations

import contextlib
import csv as stdlib_csv
import io
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from offerflow.config import CsvFormat
from offerflow.errors import InputError
from offerflow.pipeline.inputs import generate_transactions, sources, write_transactions
from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS, ReadResult, read_transactions

NAMES = list(DEFAULT_COLUMNS.values())


def _read(path: Path, as_of: datetime, csv: CsvFormat, **options: object) -> ReadResult:
    return read_transactions(path, as_of=as_of, csv=csv, **options)  # type: ignore[arg-type]


def _write(path: Path, rows: list[list[str]], csv: CsvFormat, end: str = "\n") -> Path:
    """Rows of fields, the header first, each field written as it is (quotes included)."""
    text = "".join(csv.delimiter.join(row) + end for row in [NAMES, *rows])
    path.write_bytes(text.encode(csv.encoding))
    return path


@pytest.mark.parametrize(
    ("csv", "timestamps"),
    [
        pytest.param(
            CsvFormat(delimiter=";", decimal=",", thousands="."), None, id="semicolon-comma"
        ),
        pytest.param(CsvFormat(delimiter="\t", encoding="utf-16"), "epoch_ms", id="tab-utf16-ms"),
        pytest.param(CsvFormat(delimiter="|", encoding="cp1252"), "epoch_s", id="pipe-cp1252-s"),
        pytest.param(CsvFormat(quote="'", decimal=".", encoding="latin-1"), None, id="quote"),
    ],
)
@pytest.mark.parametrize("chunk_bytes", [211, 1 << 22])
def test_a_file_in_a_partners_format_reads_as_the_standard_file_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_of: datetime,
    csv: CsvFormat,
    timestamps: str | None,
    chunk_bytes: int,
) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk_bytes)  # records cut across reads too
    standard = tmp_path / "standard.csv"
    write_transactions(generate_transactions(120, seed=8), standard)
    theirs = tmp_path / "theirs.csv"
    pattern = timestamps or "%Y-%m-%d %H:%M:%S"
    frame = generate_transactions(120, seed=8, timestamp_format=pattern, numbers=csv)
    write_transactions(frame, theirs, csv)
    expected = _read(standard, as_of, CsvFormat())
    read = _read(theirs, as_of, csv, timestamp_format=timestamps)
    assert read.rows_in == expected.rows_in > 500
    assert_frame_equal(read.transactions, expected.transactions)
    assert read.rejects_by_reason == expected.rejects_by_reason


def test_a_quoted_field_may_hold_the_delimiter_and_the_partners_quote(
    tmp_path: Path, as_of: datetime
) -> None:
    csv = CsvFormat(delimiter=";", quote="'")
    path = _write(
        tmp_path / "quoted.csv",
        [
            ["'A;1'", "2023-05-06 07:08:09", "buy", "100", "1.5"],
            ["'O''Brien'", "2023-05-06 07:08:09", "'gift'", "200", "2.5"],
            ['B"x', "2023-05-06 07:08:09", "buy", "300", "3.5"],  # a double quote is text here
            ["C'x", "2023-05-06 07:08:09", "buy", "400", "4.5"],  # a stray quote of theirs
            ["D", "2023-05-06 07:08:09", "buy", "500", "5.5"],
        ],
        csv,
    )
    read = _read(path, as_of, csv)
    assert read.transactions.get_column("member_id").to_list() == ["A;1", "O'Brien", 'B"x', "D"]
    assert read.rejects.select("line", "memberId", "reason").rows() == [(5, "C'x", "malformed_row")]


def test_a_decimal_comma_reads_numbers_and_refuses_a_point(tmp_path: Path, as_of: datetime) -> None:
    csv = CsvFormat(delimiter=";", decimal=",")
    path = _write(
        tmp_path / "comma.csv",
        [
            ["A", "2023-05-06 07:08:09", "buy", "1200", "12,5"],
            ["B", "2023-05-06 07:08:09", "buy", "-3", ",25"],
            ["C", "2023-05-06 07:08:09", "buy", "100", "1.234"],  # a thousand, or one point two?
        ],
        csv,
    )
    read = _read(path, as_of, csv)
    assert read.transactions.get_column("revenue").to_list() == [12.5, 0.25]
    assert read.rejects.select("line", "reason").rows() == [(4, "bad_number:revenue")]


def test_timestamps_in_seconds_or_milliseconds_since_the_epoch(
    tmp_path: Path, as_of: datetime
) -> None:
    moment = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
    units = {"epoch_s": "1683356889", "epoch_ms": "1683356889000"}
    for unit, text in units.items():
        other = units["epoch_ms" if unit == "epoch_s" else "epoch_s"]
        path = _write(
            tmp_path / f"{unit}.csv",
            [
                ["A", text, "buy", "1", "1.0"],
                ["B", "2023-05-06 07:08:09", "buy", "1", "1.0"],  # ISO is not the format given
                ["C", other, "buy", "1", "1.0"],  # the other unit: 1970, or after 2200
                ["D", f"{text}.5", "buy", "1", "1.0"],
            ],
            CsvFormat(),
        )
        read = _read(path, as_of, CsvFormat(), timestamp_format=unit)
        half = {"epoch_s": 500_000, "epoch_ms": 500}[unit]
        assert read.transactions.get_column("ts").to_list() == [
            moment,
            moment.replace(microsecond=half),
        ], unit
        assert read.rejects.select("memberId", "reason").rows() == [
            ("B", "bad_timestamp"),
            ("C", "bad_timestamp"),
        ], unit


def test_a_file_in_a_single_byte_encoding_keeps_its_letters(
    tmp_path: Path, as_of: datetime
) -> None:
    csv = CsvFormat(encoding="cp1252")
    path = tmp_path / "cp1252.csv"
    path.write_bytes(
        (",".join(NAMES) + "\r\n").encode()
        + b"Ren\xe9,2023-05-06 07:08:09,buy,1,1.0\r\n"
        + b"Zo\x81,2023-05-06 07:08:09,buy,1,1.0\r\n"  # 0x81 is no cp1252 character
        + b"\x80uro,2023-05-06 07:08:09,buy,1,1.0\r\n"
    )
    read = _read(path, as_of, csv)
    assert read.transactions.get_column("member_id").to_list() == ["René", "€uro"]
    assert read.rejects.select("line", "reason").rows() == [(3, "bad_encoding:member_id")]


def test_the_same_file_read_as_utf8_says_which_encoding_to_set(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "utf16.csv"
    path.write_bytes(("\ufeff" + ",".join(NAMES) + "\n").encode("utf-16-le"))
    with pytest.raises(InputError, match=r"set input\.csv\.encoding to utf-16"):
        _read(path, as_of, CsvFormat())


def test_text_that_is_not_in_the_encoding_given_is_an_input_error_naming_the_file(
    tmp_path: Path, as_of: datetime
) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes((",".join(NAMES) + "\n").encode("utf-16-le") + b"\x41")  # half a unit
    with pytest.raises(InputError, match=r"not utf-16-le text") as raised:
        _read(path, as_of, CsvFormat(encoding="utf-16-le"))
    assert str(path) in str(raised.value)


def test_a_header_in_another_delimiter_names_the_setting(tmp_path: Path, as_of: datetime) -> None:
    path = _write(tmp_path / "commas.csv", [], CsvFormat())
    with pytest.raises(InputError, match=r"delimited by ','\? see input.csv.delimiter"):
        _read(path, as_of, CsvFormat(delimiter=";"))


def test_a_number_in_the_other_decimal_mark_names_the_setting(
    tmp_path: Path, as_of: datetime
) -> None:
    from offerflow.pipeline.inputs import describe_rejects

    path = _write(tmp_path / "comma.csv", [["A", "2023-05-06", "buy", "1", '"12,5"']], CsvFormat())
    read = _read(path, as_of, CsvFormat())
    (reason,) = describe_rejects(read, columns=DEFAULT_COLUMNS, timestamp_format=None, as_of=as_of)
    assert reason == (
        "1 of 1 rows bad_number:revenue: '12,5' holds a ',': is input.csv.decimal ',', or "
        "input.csv.thousands ','?"
    )


def test_the_generator_writes_a_partners_format(tmp_path: Path) -> None:
    csv = CsvFormat(delimiter=";", decimal=",", thousands=".", encoding="utf-16")
    plain = generate_transactions(30, seed=3, timestamp_format="epoch_ms")
    theirs = generate_transactions(30, seed=3, timestamp_format="epoch_ms", numbers=csv)
    path = tmp_path / "theirs.csv"
    write_transactions(theirs, path, csv)
    back = pl.read_csv(
        path.read_text(encoding="utf-16").encode(), separator=";", infer_schema=False
    )
    assert back.equals(theirs)
    points = plain.get_column("lastTransactionPointsBought").drop_nulls().to_list()
    spelled = theirs.get_column("lastTransactionPointsBought").drop_nulls().to_list()
    big = [(a, b) for a, b in zip(points, spelled, strict=True) if abs(int(a)) >= 1000]
    assert big
    assert all(b == f"{int(a):,}".replace(",", ".") for a, b in big)
    revenue = theirs.get_column("lastTransactionRevenueUSD").drop_nulls()
    assert revenue.str.contains(",").any()
    assert not revenue.str.contains(r"\.\d{1,2}$|\.\d{4,}").any()  # a '.' only groups
    assert back.get_column("lastTransactionUtcTs").drop_nulls().str.contains(r"^\d{13}$").all()


def test_the_real_file_in_a_partners_format_reads_to_the_same_rows_and_rejects(
    tmp_path: Path, member_data: Path, as_of: datetime
) -> None:
    # the real file rewritten as a European spreadsheet would: ';', a decimal comma, cp1252,
    # CRLF and epoch milliseconds; what does not parse as a timestamp is left as it is
    records = list(stdlib_csv.reader(io.StringIO(member_data.read_text(encoding="utf-8"))))
    for record in records[1:]:
        if len(record) == len(NAMES):
            with contextlib.suppress(ValueError):
                moment = datetime.strptime(record[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                record[1] = str(int(moment.timestamp()) * 1000)
            record[3:] = [value.replace(".", ",") for value in record[3:]]
    text = io.StringIO()
    stdlib_csv.writer(text, delimiter=";", lineterminator="\r\n").writerows(records)
    theirs = tmp_path / "theirs.csv"
    theirs.write_bytes(text.getvalue().encode("cp1252"))
    csv = CsvFormat(delimiter=";", decimal=",", encoding="cp1252")
    read = _read(theirs, as_of, csv, timestamp_format="epoch_ms")
    expected = _read(member_data, as_of, CsvFormat())
    assert_frame_equal(read.transactions, expected.transactions)
    reasons = ["line", "reason"]
    assert read.rejects.select(reasons).equals(expected.rejects.select(reasons))
    assert read.rows_rejected > 0


@pytest.mark.parametrize(
    ("csv", "texts", "values"),
    [
        (
            CsvFormat(delimiter=";", decimal=",", thousands="."),
            ["1.234,5", "-12.345.678", "999", "1.23,5", "1234.567", "12,345"],
            [1234.5, -12345678.0, 999.0, None, None, 12.345],
        ),
        (
            CsvFormat(thousands=","),
            ['"1,234.5"', '"+1,000"', "1234", '"1,2345"', '",123"'],
            [1234.5, 1000.0, 1234.0, None, None],
        ),
        (
            CsvFormat(delimiter=";", decimal=",", thousands=" "),
            ["1 234,5", "1  234", "12 345 678,25"],
            [1234.5, None, 12345678.25],
        ),
    ],
    ids=["dot-comma", "comma-dot", "space"],
)
def test_thousands_separators_are_read_when_the_digits_go_by_three(
    tmp_path: Path, as_of: datetime, csv: CsvFormat, texts: list[str], values: list[float | None]
) -> None:
    rows = [[f"M{i}", "2023-05-06 07:08:09", "buy", "1", text] for i, text in enumerate(texts)]
    read = _read(_write(tmp_path / "grouped.csv", rows, csv), as_of, csv)
    by_member = dict(read.transactions.select("member_id", "revenue").iter_rows())
    assert [by_member.get(f"M{i}") for i in range(len(texts))] == values
    assert set(read.rejects.get_column("reason")) <= {"bad_number:revenue"}
