"""The row ledger as properties: whatever the rows hold, each is used or rejected exactly once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.pipeline.inputs.parsing import CANONICAL, REASONS
from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS, parse_as_of, read_transactions

Row = tuple[str, str, str, str, str]

AS_OF = parse_as_of("2024-01-10")
# What the reader strips from a value: Unicode White_Space. Python's str.strip() also strips
# the separators U+001C..U+001F, which are not White_Space.
WHITE_SPACE = "".join(
    c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f"
)

_JUNK = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(" \t\n\r,\"'"),
    max_size=10,
)
_BLANK = st.sampled_from(["", " ", "\t", "\u00a0", "\u3000 "])
_FIELDS = {
    "member_id": st.sampled_from(["A", "B", " A", "A ", "é", "会员", "\u00a0B"]) | _BLANK | _JUNK,
    "ts": st.sampled_from(
        [
            "2023-05-06 07:08:09",
            "2023-05-06T07:08:09Z",
            "2023-05-06T23:08:09-05:30",
            "2023-05-06",
            "2024-01-10T23:59:59.999999Z",
            "2024-01-11T00:00:00Z",
            "2030-01-01",
            "2023-02-30 00:00:00",
            "2023-05-06 25:00:00",
            "06/05/2023",
        ]
    )
    | _BLANK
    | _JUNK,
    "type": st.sampled_from(["buy", "BUY", " Gift ", "reDEEM", "refund", "purchase", "bu y"])
    | _BLANK
    | _JUNK,
    "points": st.sampled_from(["100", "-2.5", "1e3", "nan", "NaN", "inf", "-inf", "1e400", "x"])
    | _BLANK
    | _JUNK,
    "revenue": st.sampled_from(["1.0", "0", " 3.5 ", "-Infinity", "abc", "1,0"]) | _BLANK | _JUNK,
}
_ROW = st.tuples(*(_FIELDS[name] for name in CANONICAL))


@st.composite
def _rows(draw: st.DrawFn) -> list[Row]:
    """Rows, some of them exact copies of earlier ones."""
    rows: list[Row] = draw(st.lists(_ROW, max_size=25))
    if rows:
        for _ in range(draw(st.integers(0, 8))):
            copy = rows[draw(st.integers(0, len(rows) - 1))]
            rows.insert(draw(st.integers(0, len(rows))), copy)
    return rows


def _write(directory: Path, rows: list[Row], *, quote_all: bool = False) -> Path:
    # Line ends are CRLF, so that the writer quotes a field holding a bare \r as well as \n.
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(DEFAULT_COLUMNS.values())
    writer.writerows(rows)
    path = directory / "partner.csv"
    path.write_text(text.getvalue(), encoding="utf-8")
    return path


@settings(max_examples=150, deadline=None)
@given(rows=_rows(), quote_all=st.booleans())
def test_every_row_is_used_or_rejected_once_and_every_member_is_kept(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Row], quote_all: bool
) -> None:
    path = _write(tmp_path_factory.mktemp("ledger"), rows, quote_all=quote_all)
    result = read_transactions(path, as_of=AS_OF)

    assert result.rows_in == len(rows)
    assert result.rows_in == result.rows_used + result.rows_rejected
    assert result.rows_rejected == sum(result.rejects_by_reason.values())
    assert set(result.rejects_by_reason) <= set(REASONS)
    used = result.transactions["line"].to_list()
    rejected = result.rejects["line"].to_list()
    assert sorted(used + rejected) == list(range(2, len(rows) + 2))

    ids = {row[0].strip(WHITE_SPACE) for row in rows} - {""}
    assert result.members.to_list() == sorted(ids)
    # A member is a member whether or not it has a usable row; those without get no_transactions.
    assert set(result.transactions["member_id"]) <= ids


@settings(max_examples=150, deadline=None)
@given(rows=_rows(), quote_all=st.booleans())
def test_rejects_keep_their_raw_values(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Row], quote_all: bool
) -> None:
    path = _write(tmp_path_factory.mktemp("raw"), rows, quote_all=quote_all)
    result = read_transactions(path, as_of=AS_OF)

    for line, *values, _reason in result.rejects.iter_rows():
        assert values == [value or None for value in rows[line - 2]]


@settings(max_examples=150, deadline=None)
@given(rows=_rows())
def test_a_copy_of_a_usable_row_is_a_duplicate_and_of_a_reject_the_same_reject(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Row]
) -> None:
    result = read_transactions(_write(tmp_path_factory.mktemp("copies"), rows), as_of=AS_OF)

    reasons = dict(zip(result.rejects["line"], result.rejects["reason"], strict=True))
    for index, row in enumerate(rows):
        first = rows.index(row)
        if first == index:
            assert reasons.get(index + 2) != "duplicate_row"
        elif first + 2 in reasons:
            assert reasons[index + 2] == reasons[first + 2]
        else:
            assert reasons[index + 2] == "duplicate_row"
