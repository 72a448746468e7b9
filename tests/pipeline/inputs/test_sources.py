"""Input sources: a file read in batches reads exactly as the whole file would."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from offerflow.errors import InputError
from offerflow.pipeline.inputs import sources
from offerflow.pipeline.inputs.sources import (
    BAD_ENCODING,
    MALFORMED,
    TextChunks,
    read_text_columns,
)

COLUMNS = {"member_id": "id", "ts": "when"}
#: larger than any file here: the whole file in one batch
WHOLE = 1 << 20


def read(path: Path, chunk_bytes: int) -> pl.DataFrame:
    """The text columns of ``path``, its batches (each checked to be whole) put together."""

    def concat(batches: TextChunks) -> pl.DataFrame:
        return pl.concat(list(batches()))

    return read_text_columns(path, COLUMNS, fmt="csv", then=concat, chunk_bytes=chunk_bytes)


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "partner.csv"
    path.write_bytes(content)
    return path


TEXTS = {
    "plain": b"id,when\nA,1\nB,2\nC,3\n",
    "no final newline": b"id,when\nA,1\nB,2",
    "CRLF, blank lines before the header and between rows": (
        b"\r\n\nid,when\r\nA,1\r\n\r\nB,2\r\n\n"
    ),
    "byte-order mark": b"\xef\xbb\xbfid,when\nA,1\nB,2\n",
    "quoted newlines, commas and quotes": (
        b'id,when\n"A\nB","1,""2""\n3"\n"",""\n"C\r\n",4\nD,"""\n"""\n'
    ),
    "quoted newline in the header": b'"i\nd",x,id,when\n1,2,A,1\n3,4,B,2\n',
    "other columns": b"x,id,y,when,z\n1,A,2,3,4\n5,B,6,7,8\n",
    "header only": b"id,when\n",
    "header only, no newline": b"id,when",
}


@pytest.mark.parametrize("content", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 8, 13, 40])
def test_batches_read_like_the_whole_file(tmp_path: Path, content: bytes, chunk_bytes: int) -> None:
    path = write(tmp_path, content)
    whole = pl.read_csv(content, infer_schema=False).select(
        pl.col(source).alias(name) for name, source in COLUMNS.items()
    )

    batched = read(path, chunk_bytes)

    assert_frame_equal(read(path, WHOLE), batched)
    assert_frame_equal(batched.drop("line", "problem"), whole)
    assert batched["problem"].null_count() == batched.height


#: LF, and what becomes of it converted to CRLF once and twice
LINE_ENDS = {"LF": b"\n", "CRLF": b"\r\n", "CR CR LF": b"\r\r\n"}
LF_TEXT = b'\nid,when\nA,1\n"B\nB",2\n\nC,3\n""""\nD,4\n'


@pytest.mark.parametrize("end", LINE_ENDS.values(), ids=LINE_ENDS.keys())
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5, 7, 11, WHOLE])
def test_line_ends_read_alike_in_batches_of_any_size(
    tmp_path: Path, end: bytes, chunk_bytes: int
) -> None:
    # Small batches split the file between every two bytes, a CR and its LF among them.
    path = write(tmp_path, LF_TEXT.replace(b"\n", end))

    batched = read(path, chunk_bytes)

    expected = read(write(tmp_path, LF_TEXT), WHOLE)
    # a newline inside a quoted field is the file's own: CRLF stays CRLF
    assert_frame_equal(batched.with_columns(pl.col("member_id").str.replace("\r", "")), expected)
    assert batched["line"].to_list() == [3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("data", "start"),
    [
        (b"id,when\n", 0),
        (b"\nid", 1),
        (b"\r\nid", 2),
        (b"\r\n\r\n\nid", 5),
        (b"\xef\xbb\xbf\r\nid", 5),
        (b"\rid", 0),
    ],
)
def test_the_header_starts_after_a_bom_and_blank_lines_of_either_end(
    data: bytes, start: int
) -> None:
    assert sources._header_start(data) == start


@pytest.mark.parametrize("chunk_bytes", [3, WHOLE])
def test_a_file_whose_lines_end_in_a_bare_cr_reads_as_with_lf(
    tmp_path: Path, chunk_bytes: int
) -> None:
    lf = b'\nid,when\nA,1\n"B\nB",2\n\nC,3\n'
    expected = read(write(tmp_path, lf), WHOLE)
    assert expected["line"].to_list() == [3, 4, 5, 6]
    assert_frame_equal(read(write(tmp_path, lf.replace(b"\n", b"\r")), chunk_bytes), expected)


def test_line_numbers_run_on_across_batches(tmp_path: Path) -> None:
    path = write(tmp_path, b'\nid,when\nA,1\n"B\nB",2\n\nC,3\n')
    assert read(path, 1)["line"].to_list() == [3, 4, 5, 6]


def test_a_record_longer_than_a_batch_is_read_whole(tmp_path: Path) -> None:
    long = "x" * 1000
    path = write(tmp_path, f'id,when\nA,1\n"{long}\n{long}",2\nC,3\n'.encode())

    batched = read(path, 64)

    assert batched["member_id"].to_list() == ["A", f"{long}\n{long}", "C"]


def test_a_file_without_rows_is_one_empty_batch(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,when\n")
    batches = read_text_columns(path, COLUMNS, fmt="csv", then=lambda batches: list(batches()))

    assert len(batches) == 1
    assert batches[0].schema == pl.Schema(
        {"line": pl.Int64, "member_id": pl.String, "ts": pl.String, "problem": pl.String}
    )


def test_the_file_can_be_read_again(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,when\nA,1\nB,2\nC,3\n")

    def twice(batches: TextChunks) -> tuple[pl.DataFrame, pl.DataFrame]:
        return pl.concat(list(batches())), pl.concat(list(batches()))

    first, second = read_text_columns(path, COLUMNS, fmt="csv", then=twice, chunk_bytes=5)

    assert_frame_equal(first, second)


def test_a_row_with_too_many_fields_in_a_later_batch_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,when\nA,1\nB,2\nC,3\nD,4,5\nE,6\n")
    with pytest.raises(InputError, match="this row has 3 fields, the header 2") as raised:
        read(path, 4)
    assert raised.value.line == 5


@pytest.mark.parametrize("chunk_bytes", [1, 4, 9, WHOLE])
def test_a_non_utf8_byte_in_a_later_batch_spoils_only_its_row(
    tmp_path: Path, chunk_bytes: int
) -> None:
    path = write(tmp_path, b"id,when\nA,1\nB,2\nC\xff,3\xfe\xfe\nD,4\n")

    batched = read(path, chunk_bytes)

    assert batched["member_id"].to_list() == ["A", "B", "C\ufffd", "D"]
    assert batched["ts"].to_list() == ["1", "2", "3\ufffd\ufffd", "4"]
    assert batched["problem"].to_list() == [None, None, BAD_ENCODING + "member_id", None]


# --- records that break the quoting rules ----------------------------------------------------

#: (text, member ids by line, lines of malformed records); the columns are ``id,when``
MALFORMED_TEXTS = {
    "stray quote": (b'id,when\nA,1\nB5"x,2\nC,3\n', ["A", 'B5"x', "C"], [3]),
    "stray quote before a delimiter": (b'id,when\nA,1\nB5",2\nC,3\n', ["A", 'B5"', "C"], [3]),
    "two stray quotes, one record each": (
        b'id,when\nA,1\nB"x,2\nC,3\nD"y,4\nE,5\n',
        ["A", 'B"x', "C", 'D"y', "E"],
        [3, 5],
    ),
    "two stray quotes in one field": (b'id,when\nA,1\nB"x"y,2\nC,3\n', ["A", 'B"x"y', "C"], [3]),
    "text after a closing quote": (b'id,when\nA,1\n"B"x,2\nC,3\n', ["A", "Bx", "C"], [3]),
    "stray quote, then a field spanning lines": (
        b'id,when\nA,1\nB"x,"2\n2"\n"C\nC",3\nD,4\n',
        ["A", 'B"x', "C\nC", "D"],
        [3],
    ),
    "stray quote in the last field, CRLF": (
        b'id,when\r\nA,1\r\nB,2"\r\nC,3\r\n',
        ["A", "B", "C"],
        [3],
    ),
    "stray quote in a column not mapped": (
        b'x,id,when\n1,A,1\n2",B,2\n3,C,3\n',
        ["A", "B", "C"],
        [3],
    ),
    "stray quote in the last record, no final newline": (b'id,when\nA,1\nB"x,2', ["A", 'B"x'], [3]),
}


@pytest.mark.parametrize(
    ("content", "member_ids", "malformed"), MALFORMED_TEXTS.values(), ids=MALFORMED_TEXTS.keys()
)
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 8, 13, 40, WHOLE])
def test_a_record_breaking_the_quoting_rules_is_marked_and_every_other_is_read(
    tmp_path: Path, content: bytes, member_ids: list[str], malformed: list[int], chunk_bytes: int
) -> None:
    path = write(tmp_path, content)

    batched = read(path, chunk_bytes)

    assert batched["member_id"].to_list() == member_ids
    assert batched["line"].to_list() == list(range(2, len(member_ids) + 2))
    marked = batched.filter(pl.col("problem") == MALFORMED)["line"].to_list()
    assert marked == malformed
    assert batched["problem"].drop_nulls().to_list() == [MALFORMED] * len(malformed)


def test_a_stray_quote_early_in_a_large_file_costs_one_record(tmp_path: Path) -> None:
    # Counted by parity, the stray quote would leave every later newline inside a field.
    rows = [f"M{i},{i}" for i in range(3000)]
    rows[1] = 'M1"x,1'
    path = write(tmp_path, ("id,when\n" + "\n".join(rows) + "\n").encode())

    batched = read(path, 4096)

    assert batched.height == 3000
    assert batched["line"].to_list() == list(range(2, 3002))
    assert batched.filter(pl.col("problem").is_not_null())["line"].to_list() == [3]
    assert batched["ts"].to_list() == [str(i) for i in range(3000)]


def test_a_quoted_field_never_closed_is_an_input_error_at_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, b'id,when\nA,1\nB"x,2\nC,"3\nD,4\n')
    with pytest.raises(InputError, match="never closed") as raised:
        read(path, 5)
    assert raised.value.line == 4


# --- properties ------------------------------------------------------------------------------

_VALUE = st.text(st.sampled_from('ab ,"\n\r\t\u00e9'), max_size=6)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(_VALUE, _VALUE, _VALUE), max_size=12),
    quote_all=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    chunk_bytes=st.integers(min_value=1, max_value=48),
)
def test_any_csv_text_reads_the_same_in_batches_of_any_size(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str, str]],
    quote_all: bool,
    line_end: str,
    chunk_bytes: int,
) -> None:
    text = io.StringIO()
    writer = csv.writer(
        text, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator=line_end
    )
    writer.writerows([("id", "other", "when"), *rows])
    path = tmp_path_factory.mktemp("batches") / "partner.csv"
    path.write_text(text.getvalue(), encoding="utf-8")

    assert_frame_equal(read(path, chunk_bytes), read(path, WHOLE))


def _field(value: str) -> str:
    """One value as a CSV field, quoted when it must be."""
    needs = any(c in value for c in ',"\r\n')
    return '"' + value.replace('"', '""') + '"' if needs else value


_PLAIN = st.text(st.sampled_from("ab \u00e9"), min_size=2, max_size=5)
# No bare CR: with LF line ends the csv module leaves one unquoted.
_QUOTABLE = st.text(st.sampled_from('ab ,"\n\t\u00e9'), max_size=6)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(_QUOTABLE, _PLAIN, _QUOTABLE), min_size=1, max_size=12),
    strays=st.sets(st.integers(min_value=0, max_value=11)),
    line_end=st.sampled_from(["\n", "\r\n"]),
    chunk_bytes=st.integers(min_value=1, max_value=48),
)
def test_stray_quotes_cost_only_their_records_in_batches_of_any_size(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str, str]],
    strays: set[int],
    line_end: str,
    chunk_bytes: int,
) -> None:
    strays = {index for index in strays if index < len(rows)}
    text = f"id,other,when{line_end}"
    for index, (first, plain, last) in enumerate(rows):
        if index in strays:  # a quote inside the unquoted middle field
            plain = f'{plain[0]}"{plain[1:]}'
        text += f"{_field(first)},{plain},{_field(last)}{line_end}"
    path = tmp_path_factory.mktemp("strays") / "partner.csv"
    path.write_text(text, encoding="utf-8")

    batched = read(path, chunk_bytes)

    assert batched["line"].to_list() == list(range(2, len(rows) + 2))
    assert batched.filter(pl.col("problem") == MALFORMED)["line"].to_list() == sorted(
        index + 2 for index in strays
    )
    # each record's own values, CRLF's CR dropped from the last field as polars drops it
    expected = [
        (first, last.removesuffix("\r") if line_end == "\r\n" else last) for first, _, last in rows
    ]
    assert list(zip(batched["member_id"], batched["ts"], strict=True)) == [
        (first or None, last or None) for first, last in expected
    ]
