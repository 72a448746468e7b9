"""The synthetic transaction generator: deterministic, shaped like the real file, readable."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from offerflow.pipeline.inputs.generator import generate_transactions, write_transactions
from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS, parse_as_of, read_transactions

MEMBERS = 4000
ID, TS, TYPE, POINTS, REVENUE = DEFAULT_COLUMNS.values()


@pytest.fixture(scope="module")
def generated() -> pl.DataFrame:
    return generate_transactions(MEMBERS, seed=42)


#: rows with every field but the member id empty
ID_ONLY = pl.all_horizontal(pl.col(TS, TYPE, POINTS, REVENUE).is_null())


def test_same_seed_gives_the_same_frame(generated: pl.DataFrame) -> None:
    assert_frame_equal(generate_transactions(MEMBERS, seed=42), generated)


def test_another_seed_gives_another_frame(generated: pl.DataFrame) -> None:
    other = generate_transactions(MEMBERS, seed=43)
    assert len(set(other[ID].drop_nulls()) & set(generated[ID].drop_nulls())) < 5


def test_columns_are_text_under_the_default_names(generated: pl.DataFrame) -> None:
    assert generated.schema == pl.Schema(dict.fromkeys(DEFAULT_COLUMNS.values(), pl.String))


def test_columns_can_be_named_for_a_partner() -> None:
    columns = {"member_id": "id", "ts": "when", "type": "kind", "points": "pts", "revenue": "usd"}
    assert generate_transactions(3, seed=1, columns=columns).columns == list(columns.values())


def test_member_ids_are_eight_uppercase_hex_digits(generated: pl.DataFrame) -> None:
    ids = generated[ID].drop_nulls()
    assert ids.str.contains(r"^[0-9A-F]{8}$").all()


def test_member_ids_are_unique_per_member(generated: pl.DataFrame) -> None:
    # A member disappears only when every one of its rows lost its id.
    blanked = generated[ID].null_count()
    assert MEMBERS - blanked <= generated[ID].drop_nulls().n_unique() <= MEMBERS


def test_about_one_member_in_ten_has_a_single_id_only_row(generated: pl.DataFrame) -> None:
    only = generated.filter(ID_ONLY)[ID].drop_nulls()
    assert 0.07 < only.n_unique() / MEMBERS < 0.13
    with_rows = generated.filter(~ID_ONLY)[ID]
    assert not set(only) & set(with_rows)
    assert only.is_unique().all()


def test_about_one_row_in_400_has_no_member_id(generated: pl.DataFrame) -> None:
    share = generated[ID].null_count() / generated.height
    assert 1 / 1000 < share < 1 / 160


def test_members_have_about_4_75_rows_and_some_many(generated: pl.DataFrame) -> None:
    counts = generated.filter(~ID_ONLY).group_by(ID).len()["len"]
    assert 4.3 < counts.cast(pl.Float64).mean() < 5.2  # type: ignore[operator]
    assert counts.min() == 1
    assert counts.max() >= 20  # type: ignore[operator]


def test_types_are_about_equally_frequent(generated: pl.DataFrame) -> None:
    shares = generated[TYPE].drop_nulls().value_counts(normalize=True)
    assert sorted(shares[TYPE]) == ["buy", "gift", "redeem"]
    assert shares["proportion"].is_between(0.3, 0.37).all()


def test_points_and_revenue_look_like_the_real_files(generated: pl.DataFrame) -> None:
    rows = generated.drop_nulls().with_columns(
        points=pl.col(POINTS).cast(pl.Int64), revenue=pl.col(REVENUE).cast(pl.Float64)
    )
    redeem = rows.filter(pl.col(TYPE) == "redeem")
    other = rows.filter(pl.col(TYPE) != "redeem")

    assert redeem["points"].is_between(-10_000, -100).all()
    assert (redeem[REVENUE] == "0.0").all()
    assert other["points"].is_between(100, 10_000).all()
    assert (rows["points"] % 100 == 0).all()
    rate = other["points"] / other["revenue"]
    assert ((rate - rate.round()).abs() < 1e-9).all()
    assert set(rate.round().cast(pl.Int64)) == set(range(100, 2001, 100))


@pytest.mark.parametrize(
    ("start", "end"),
    [(date(2020, 1, 1), date(2024, 1, 5)), (date(2023, 12, 31), date(2024, 1, 1))],
)
def test_timestamps_are_plain_utc_within_start_and_end(start: date, end: date) -> None:
    ts = generate_transactions(500, seed=5, start=start, end=end)[TS].drop_nulls()
    assert ts.str.contains(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$").all()
    moments = ts.str.to_datetime("%Y-%m-%d %H:%M:%S")
    assert moments.min() >= datetime.combine(start, datetime.min.time())  # type: ignore[operator]
    assert moments.max() < datetime.combine(end, datetime.min.time())  # type: ignore[operator]


def test_rows_are_shuffled(generated: pl.DataFrame) -> None:
    ids = generated[ID]
    adjacent_same = (ids == ids.shift(1)).sum()
    assert adjacent_same < generated.height / 100
    in_time_order = (
        generated.drop_nulls()
        .group_by(ID, maintain_order=True)
        .agg(pl.col(TS).is_sorted().alias("sorted"), pl.len())
        .filter(pl.col("len") >= 5)
    )
    assert in_time_order["sorted"].mean() < 0.1  # type: ignore[operator]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generated_file_reads_back_with_a_balanced_ledger(
    tmp_path: Path, generated: pl.DataFrame, suffix: str
) -> None:
    path = tmp_path / f"generated{suffix}"
    write_transactions(generated, path)

    result = read_transactions(path, as_of=parse_as_of("2024-01-10"))

    assert result.rows_in == generated.height
    assert result.rows_used + result.rows_rejected == result.rows_in
    assert result.rejects_by_reason == {
        "missing_field:ts": generated.filter(ID_ONLY & pl.col(ID).is_not_null()).height,
        "missing_member_id": generated[ID].null_count(),
    }
    assert result.members.to_list() == sorted(generated[ID].drop_nulls().unique())


def test_written_csv_holds_the_frame(tmp_path: Path, generated: pl.DataFrame) -> None:
    path = tmp_path / "generated.csv"
    write_transactions(generated, path)
    assert_frame_equal(pl.read_csv(path, infer_schema=False), generated)


def test_partner_spelling_of_types_reads_back_through_aliases(tmp_path: Path) -> None:
    frame = generate_transactions(200, seed=9, type_spelling={"buy": "PURCHASE", "gift": "Gift"})
    assert set(frame[TYPE].drop_nulls()) == {"PURCHASE", "Gift", "redeem"}
    path = tmp_path / "partner.csv"
    write_transactions(frame, path)

    result = read_transactions(
        path, as_of=parse_as_of("2024-01-10"), type_aliases={"purchase": "buy"}
    )

    assert "unknown_type" not in result.rejects_by_reason
    assert set(result.transactions["type"]) == {"buy", "gift", "redeem"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": -1}, "members"),
        ({"members": 1, "start": date(2024, 1, 1), "end": date(2024, 1, 1)}, "before"),
        ({"members": 1, "type_spelling": {"purchase": "buy"}}, "purchase"),
        ({"members": 1, "columns": {"member_id": "id"}}, "missing"),
    ],
)
def test_impossible_arguments_are_value_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_transactions(seed=1, **kwargs)  # type: ignore[arg-type]


def test_no_members_give_an_empty_frame() -> None:
    frame = generate_transactions(0, seed=1)
    assert frame.is_empty()
    assert frame.columns == list(DEFAULT_COLUMNS.values())


def test_unknown_suffix_is_a_value_error(tmp_path: Path, generated: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"\.json"):
        write_transactions(generated, tmp_path / "generated.json")
