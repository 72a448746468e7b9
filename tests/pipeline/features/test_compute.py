"""Per-member features: hand-computed cases, families, the registry, determinism, the real file."""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import offerflow.pipeline.features as features_module
from offerflow.pipeline import generate_transactions, write_transactions
from offerflow.pipeline.features import (
    CANONICAL_SCHEMA,
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    FeatureContext,
    FeatureRegistry,
    compute_features,
)
from offerflow.pipeline.inputs.reader import parse_as_of, read_transactions

WriteCsv = Callable[..., Path]
Features = dict[str, dict[str, object]]

JOB_ORDER = (
    "AVG_POINTS_BOUGHT",
    "AVG_REVENUE_USD",
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT",
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD",
    "PCT_BUY_TRANSACTIONS",
    "PCT_GIFT_TRANSACTIONS",
    "PCT_REDEEM_TRANSACTIONS",
    "DAYS_SINCE_LAST_TRANSACTION",
)


def features_of(path: Path, as_of: datetime, names: tuple[str, ...] = DEFAULT_FEATURES) -> Features:
    """Read a file and compute its features, by member."""
    transactions = read_transactions(path, as_of=as_of).transactions
    result = compute_features(transactions, names, as_of=as_of)
    return {row.pop("member_id"): row for row in result.to_dicts()}


def expected(*values: float) -> dict[str, object]:
    return dict(zip(JOB_ORDER, values, strict=True))


# --- hand-computed cases -----------------------------------------------------------------------

CASES: list[tuple[str, list[str], dict[str, object]]] = [
    (
        "unsorted rows",
        [
            "U,2023-01-04 10:00:00,buy,400,4.0",
            "U,2023-01-01 10:00:00,gift,100,1.0",
            "U,2023-01-03 10:00:00,redeem,-300,0.0",
            "U,2023-01-02 10:00:00,buy,200,2.0",
        ],
        # by time: 100 gift, 200 buy, -300 redeem, 400 buy; the last 3 leave out the gift
        expected(100.0, 1.75, 100.0, 2.0, 0.5, 0.25, 0.25, 371),
    ),
    (
        "one transaction",
        ["O,2023-12-31 23:00:00,gift,500,2.5"],
        expected(500.0, 2.5, 500.0, 2.5, 0.0, 1.0, 0.0, 10),
    ),
    (
        "two transactions",
        ["W,2023-06-01 00:00:00,buy,300,3.0", "W,2023-05-01 00:00:00,redeem,-100,0.0"],
        expected(100.0, 1.5, 100.0, 1.5, 0.5, 0.0, 0.5, 223),
    ),
    (
        "ties in timestamp",
        [
            "T,2023-03-01 12:00:00,buy,3000,30.0",
            "T,2023-02-01 12:00:00,gift,100,1.0",
            "T,2023-03-01 12:00:00,redeem,-300,0.0",
            "T,2023-03-01 12:00:00,gift,600,6.0",
            "T,2023-03-01 12:00:00,buy,900,9.0",
        ],
        # four rows tie at the latest time: the last 3 in file order are -300, 600 and 900
        expected(860.0, 9.2, 400.0, 5.0, 0.4, 0.4, 0.2, 315),
    ),
    (
        "rejected rows not counted",
        [
            "R,2023-12-01 00:00:00,buy,800,8.0",
            "R,2023-12-02 00:00:00,refund,999,9.0",
            "R,2023-12-03 00:00:00,gift,abc,1.0",
            "R,,,,",
            "R,2024-01-11 00:00:00,buy,999,9.0",
        ],
        expected(800.0, 8.0, 800.0, 8.0, 1.0, 0.0, 0.0, 40),
    ),
    (
        "as-of boundary",
        [
            "B,2024-01-10T23:59:59.999999Z,redeem,-200,0.0",
            "B,2024-01-11T00:00:00Z,buy,1000,10.0",
            "B,2024-01-09 00:00:00,buy,400,4.0",
        ],
        # the row at as-of counts; the one a microsecond later does not
        expected(100.0, 2.0, 100.0, 2.0, 0.5, 0.0, 0.5, 0),
    ),
    (
        "type case-insensitive",
        [
            "C,2023-07-01 00:00:00,BUY,100,1.0",
            "C,2023-07-02 00:00:00,Gift,200,2.0",
            "C,2023-07-03 00:00:00, redeem ,-300,0.0",
            "C,2023-07-04 00:00:00,bUy,1000,10.0",
        ],
        expected(250.0, 3.25, 300.0, 4.0, 0.5, 0.25, 0.25, 190),
    ),
    (
        "offsets converted to UTC",
        [
            "Z,2024-01-10T01:00:00+02:00,buy,1000,10.0",
            "Z,2024-01-09 23:30:00,gift,300,3.0",
            "Z,2024-01-09T23:45:00Z,gift,600,6.0",
            "Z,2024-01-09T22:00:00-02:00,buy,900,9.0",
        ],
        # in UTC: 23:00, 23:30, 23:45 on the 9th and 00:00 on the 10th, so the +02:00 row is
        # the oldest (by wall-clock time it would be the latest)
        expected(700.0, 7.0, 600.0, 6.0, 0.5, 0.5, 0.0, 0),
    ),
]


@pytest.mark.parametrize(
    ("lines", "values"), [pytest.param(lines, values, id=name) for name, lines, values in CASES]
)
def test_default_features_equal_hand_computed_values(
    write_csv: WriteCsv, as_of: datetime, lines: list[str], values: dict[str, object]
) -> None:
    features = features_of(write_csv(*lines), as_of)
    assert list(features.values()) == [values]


@pytest.mark.parametrize(
    ("as_of", "ts", "days"),
    [
        (parse_as_of("2024-01-10"), "2024-01-09 23:59:00", 1),
        (parse_as_of("2024-01-10"), "2024-01-10 00:00:00", 0),
        (datetime(2024, 1, 10, 0, 0, 1, tzinfo=UTC), "2024-01-09 23:59:59", 1),
        (datetime(2024, 1, 10, 23, tzinfo=UTC), "2024-01-09 00:00:00", 1),
        (datetime(2024, 1, 10, 0, 30, tzinfo=timezone(timedelta(hours=2))), "2024-01-09", 0),
        (parse_as_of("2024-01-10"), "2024-01-10T00:30:00+01:00", 1),
        (parse_as_of("2024-01-10"), "2020-01-10 12:00:00", 1461),
    ],
    ids=[
        "23:59 the day before",
        "midnight of the day",
        "2 seconds across midnight",
        "47 hours",
        "as-of offset is a UTC date",
        "transaction offset is a UTC date",
        "four years",
    ],
)
def test_days_since_last_transaction_is_a_difference_of_utc_dates(
    write_csv: WriteCsv, as_of: datetime, ts: str, days: int
) -> None:
    features = features_of(write_csv(f"A,{ts},buy,100,1.0"), as_of)
    assert features["A"]["DAYS_SINCE_LAST_TRANSACTION"] == days


def test_extra_builtins(write_csv: WriteCsv, as_of: datetime) -> None:
    path = write_csv(
        "A,2023-12-31 10:00:00,buy,400,4.0",
        "A,2023-12-01 10:00:00,redeem,-100,0.0",
        "A,2023-12-20 10:00:00,gift,200,2.5",
    )
    names = (
        "TRANSACTION_COUNT",
        "TOTAL_POINTS_BOUGHT",
        "TOTAL_REVENUE_USD",
        "DAYS_SINCE_FIRST_TRANSACTION",
    )
    assert features_of(path, as_of, names) == {
        "A": dict(zip(names, (3, 500.0, 6.5, 40), strict=True))
    }


# --- families ----------------------------------------------------------------------------------

LAST_N_ROWS = [
    "A,2023-01-03 00:00:00,buy,300,3.0",
    "A,2023-01-01 00:00:00,gift,100,1.0",
    "A,2023-01-04 00:00:00,redeem,-400,0.5",
    "A,2023-01-02 00:00:00,buy,200,2.0",
    "B,2023-01-02 00:00:00,buy,20,2.0",
    "B,2023-01-01 00:00:00,buy,10,1.0",
]


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        # A by time: 100, 200, 300, -400 points; 1.0, 2.0, 3.0, 0.5 USD. B: 10, 20; 1.0, 2.0
        ("LAST_1_TRANSACTIONS_AVG_POINTS_BOUGHT", -400.0, 20.0),
        ("LAST_1_TRANSACTIONS_AVG_REVENUE_USD", 0.5, 2.0),
        ("LAST_2_TRANSACTIONS_AVG_POINTS_BOUGHT", -50.0, 15.0),
        ("LAST_4_TRANSACTIONS_AVG_REVENUE_USD", 1.625, 1.5),
        ("LAST_5_TRANSACTIONS_AVG_POINTS_BOUGHT", 50.0, 15.0),
        ("LAST_5_TRANSACTIONS_AVG_REVENUE_USD", 1.625, 1.5),
        ("LAST_1000000000000_TRANSACTIONS_AVG_POINTS_BOUGHT", 50.0, 15.0),
    ],
)
def test_last_n_averages_equal_hand_computed_values(
    write_csv: WriteCsv, as_of: datetime, name: str, a: float, b: float
) -> None:
    features = features_of(write_csv(*LAST_N_ROWS), as_of, (name,))
    assert features == {"A": {name: a}, "B": {name: b}}


@pytest.mark.parametrize(("n", "points"), [(1, 900.0), (2, 750.0), (4, 1050.0), (5, 860.0)])
def test_last_n_ties_keep_file_order(
    write_csv: WriteCsv, as_of: datetime, n: int, points: float
) -> None:
    path = write_csv(
        "T,2023-03-01 12:00:00,buy,3000,30.0",
        "T,2023-02-01 12:00:00,gift,100,1.0",
        "T,2023-03-01 12:00:00,redeem,-300,0.0",
        "T,2023-03-01 12:00:00,gift,600,6.0",
        "T,2023-03-01 12:00:00,buy,900,9.0",
    )
    # by time, ties in file order: 100, 3000, -300, 600, 900
    name = f"LAST_{n}_TRANSACTIONS_AVG_POINTS_BOUGHT"
    assert features_of(path, as_of, (name,)) == {"T": {name: points}}


def recent_shares(n: int) -> tuple[str, ...]:
    return tuple(f"PCT_{kind}_TRANSACTIONS_LAST_{n}_DAYS" for kind in ("BUY", "GIFT", "REDEEM"))


WINDOW_ROWS = [
    "A,2024-01-10 23:59:59,redeem,-100,0.0",
    "A,2024-01-08 00:00:00,buy,100,1.0",
    "A,2024-01-07 23:59:59,gift,100,1.0",
    "A,2023-12-01 00:00:00,gift,100,1.0",
    "B,2024-01-01 00:00:00,buy,100,1.0",
]


@pytest.mark.parametrize(
    ("n", "a", "b"),
    [
        # N = 1 is the as-of date alone
        (1, (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
        # Jan 8-10: the buy at 00:00:00 on Jan 8 counts, the gift at 23:59:59 on Jan 7 does not
        (3, (0.5, 0.0, 0.5), (0.0, 0.0, 0.0)),
        (4, (1 / 3, 1 / 3, 1 / 3), (0.0, 0.0, 0.0)),
        # Jan 2-10 has none of B's transactions: an empty window is 0.0; Jan 1-10 has its buy
        (9, (1 / 3, 1 / 3, 1 / 3), (0.0, 0.0, 0.0)),
        (10, (1 / 3, 1 / 3, 1 / 3), (1.0, 0.0, 0.0)),
        # Dec 1 is 40 days before Jan 10: in a window of 41 days, not of 40
        (40, (1 / 3, 1 / 3, 1 / 3), (1.0, 0.0, 0.0)),
        (41, (0.25, 0.5, 0.25), (1.0, 0.0, 0.0)),
        (10**15, (0.25, 0.5, 0.25), (1.0, 0.0, 0.0)),
    ],
)
def test_recent_shares_count_the_last_n_calendar_days_up_to_the_as_of_date(
    write_csv: WriteCsv,
    as_of: datetime,
    n: int,
    a: tuple[float, float, float],
    b: tuple[float, float, float],
) -> None:
    names = recent_shares(n)
    features = features_of(write_csv(*WINDOW_ROWS), as_of, names)
    assert features == {
        "A": dict(zip(names, a, strict=True)),
        "B": dict(zip(names, b, strict=True)),
    }


def test_recent_share_window_is_of_calendar_dates_not_24_hour_periods(write_csv: WriteCsv) -> None:
    as_of = datetime(2024, 1, 10, 0, 0, 1, tzinfo=UTC)
    path = write_csv(
        "A,2024-01-10 00:00:00,buy,100,1.0",
        "A,2024-01-09 23:59:59,gift,100,1.0",
        "A,2024-01-09 00:00:00,redeem,-100,0.0",
    )
    shares = features_of(path, as_of, (*recent_shares(1), *recent_shares(2)))["A"]
    assert list(shares.values()) == [1.0, 0.0, 0.0, 1 / 3, 1 / 3, 1 / 3]


def test_last_3_family_members_are_the_default_features(as_of: datetime) -> None:
    families = FeatureRegistry(families=DEFAULT_REGISTRY.families())
    ctx = FeatureContext(as_of=as_of)
    for name in ("LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT", "LAST_3_TRANSACTIONS_AVG_REVENUE_USD"):
        assert name not in families.names()
        assert families.get(name)(ctx).meta.eq(DEFAULT_REGISTRY.get(name)(ctx))


_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.integers(0, 3),  # day: few days, so that many rows tie
        st.integers(-5, 5),
        st.integers(0, 5),
    ),
    max_size=12,
)


Rows = list[tuple[str, int, int, int]]
_FAMILIES_ONLY = FeatureRegistry(families=DEFAULT_REGISTRY.families())


def _canonical(rows: Rows, seed: int) -> pl.DataFrame:
    """Rows (member, day, points, revenue) as a canonical table, lines in list order, shuffled."""
    return pl.DataFrame(
        {
            "line": list(range(2, len(rows) + 2)),
            "member_id": [row[0] for row in rows],
            "ts": [datetime(2024, 1, 1 + row[1], tzinfo=UTC) for row in rows],
            "type": ["buy"] * len(rows),
            "points": [float(row[2]) for row in rows],
            "revenue": [float(row[3]) for row in rows],
        },
        schema=CANONICAL_SCHEMA,
    ).sample(fraction=1.0, shuffle=True, seed=seed)


@settings(max_examples=30, deadline=None)
@given(rows=_ROWS, seed=st.integers(0, 100))
def test_last_3_family_equals_the_default_features(rows: Rows, seed: int) -> None:
    names = ["LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT", "LAST_3_TRANSACTIONS_AVG_REVENUE_USD"]
    frame = _canonical(rows, seed)
    as_of = datetime(2024, 1, 10, tzinfo=UTC)
    assert_frame_equal(
        compute_features(frame, names, as_of=as_of, registry=_FAMILIES_ONLY),
        compute_features(frame, names, as_of=as_of),
    )


@settings(max_examples=30, deadline=None)
@given(rows=_ROWS, n=st.integers(1, 6))
def test_last_n_family_is_the_mean_of_the_n_latest_rows(rows: Rows, n: int) -> None:
    names = [f"LAST_{n}_TRANSACTIONS_AVG_POINTS_BOUGHT", f"LAST_{n}_TRANSACTIONS_AVG_REVENUE_USD"]
    frame = _canonical(rows, seed=n)

    result = compute_features(frame, names, as_of=datetime(2024, 1, 10, tzinfo=UTC))

    assert result.height == len({row[0] for row in rows})
    for member_id, points, revenue in result.rows():
        # a stable sort by day keeps ties in line order
        last = sorted((row for row in rows if row[0] == member_id), key=lambda row: row[1])[-n:]
        assert points == sum(row[2] for row in last) / len(last)
        assert revenue == pytest.approx(sum(row[3] for row in last) / len(last), rel=1e-12)


# --- the result frame --------------------------------------------------------------------------


def test_result_has_one_row_per_member_with_transactions_sorted_by_id(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    path = write_csv(
        "b,2023-01-01 00:00:00,buy,1,1",
        "C,2023-01-01 00:00:00,buy,1,1",
        "a,,,,",
        "A,2023-01-01 00:00:00,buy,1,1",
        "C,2023-01-02 00:00:00,gift,1,1",
    )
    transactions = read_transactions(path, as_of=as_of).transactions

    result = compute_features(transactions, as_of=as_of)

    assert result["member_id"].to_list() == ["A", "C", "b"]
    assert result.schema == pl.Schema(
        {"member_id": pl.String}
        | dict.fromkeys(JOB_ORDER[:-1], pl.Float64)
        | {"DAYS_SINCE_LAST_TRANSACTION": pl.Int64}
    )


def test_no_transactions_give_an_empty_result_with_the_schema(as_of: datetime) -> None:
    empty = pl.DataFrame(
        schema={
            "line": pl.Int64,
            "member_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "type": pl.String,
            "points": pl.Float64,
            "revenue": pl.Float64,
        }
    )
    result = compute_features(empty, as_of=as_of)
    assert result.is_empty()
    assert result.columns == ["member_id", *JOB_ORDER]


def test_default_features_are_the_design_eight_in_order() -> None:
    assert DEFAULT_FEATURES == JOB_ORDER
    assert DEFAULT_REGISTRY.names()[: len(JOB_ORDER)] == JOB_ORDER


def _frame(points: list[float], lines: list[int] | None = None) -> pl.DataFrame:
    """One member's buys, all at the same instant."""
    frame = pl.DataFrame(
        {
            "member_id": ["A"] * len(points),
            "ts": [datetime(2023, 1, 1, tzinfo=UTC)] * len(points),
            "type": ["buy"] * len(points),
            "points": points,
            "revenue": points,
        },
        schema_overrides={"points": pl.Float64, "revenue": pl.Float64},
    )
    return frame if lines is None else frame.with_columns(line=pl.Series(lines))


def test_ties_follow_line_not_frame_order(as_of: datetime) -> None:
    frame = _frame([900.0, 30.0, 600.0, 300.0], lines=[5, 2, 4, 3])
    result = compute_features(frame, ["LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT"], as_of=as_of)
    assert result.row(0) == ("A", 600.0)  # lines 3, 4 and 5


def test_without_line_ties_follow_frame_order(as_of: datetime) -> None:
    frame = _frame([30.0, 300.0, 600.0, 900.0])
    result = compute_features(frame, ["LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT"], as_of=as_of)
    assert result.row(0) == ("A", 600.0)  # the frame's last three


@pytest.mark.parametrize(
    ("ts", "days"),
    [
        (pl.Series([datetime(2024, 1, 10, 0, 30)]).dt.replace_time_zone("Europe/Paris"), 1),
        (pl.Series([datetime(2024, 1, 9, 23, 30)]), 1),
    ],
    ids=["other zone", "naive is UTC"],
)
def test_calendar_dates_are_utc_dates_whatever_the_frames_zone(
    as_of: datetime, ts: pl.Series, days: int
) -> None:
    frame = pl.DataFrame(
        {"member_id": ["A"], "ts": ts, "type": ["buy"], "points": [1.0], "revenue": [1.0]}
    )
    result = compute_features(frame, ["DAYS_SINCE_LAST_TRANSACTION"], as_of=as_of)
    assert result.row(0) == ("A", days)


# --- determinism -------------------------------------------------------------------------------


def test_same_input_and_as_of_give_byte_identical_features(
    write_csv: WriteCsv, as_of: datetime
) -> None:
    lines = [line for _, case_lines, _ in CASES for line in case_lines]
    transactions = read_transactions(write_csv(*lines), as_of=as_of).transactions
    shuffled = transactions.sample(fraction=1.0, shuffle=True, seed=3)

    first = compute_features(transactions, as_of=as_of).write_csv()
    assert compute_features(transactions, as_of=as_of).write_csv() == first
    assert compute_features(shuffled, as_of=as_of).write_csv() == first
    assert compute_features(transactions.lazy(), as_of=as_of).write_csv() == first


# --- the registry ------------------------------------------------------------------------------


def test_registered_feature_is_computed_by_name(write_csv: WriteCsv, as_of: datetime) -> None:
    registry = DEFAULT_REGISTRY.copy()
    registry.register("MAX_POINTS_BOUGHT", lambda ctx: pl.col("points").max())
    transactions = read_transactions(
        write_csv("A,2023-01-01,buy,100,1", "A,2023-01-02,buy,700,1", "A,2023-01-03,buy,300,1"),
        as_of=as_of,
    ).transactions

    result = compute_features(
        transactions, ["MAX_POINTS_BOUGHT", "AVG_POINTS_BOUGHT"], as_of=as_of, registry=registry
    )

    assert result.rows() == [("A", 700.0, 1100 / 3)]
    assert "MAX_POINTS_BOUGHT" not in DEFAULT_REGISTRY


def test_feature_sees_the_as_of_through_its_context(as_of: datetime) -> None:
    seen: list[FeatureContext] = []

    def as_of_year(ctx: FeatureContext) -> pl.Expr:
        seen.append(ctx)
        return pl.lit(ctx.as_of_date.year)

    registry = FeatureRegistry({"AS_OF_YEAR": as_of_year})
    frame = _frame([1.0])

    assert (
        compute_features(frame, ["AS_OF_YEAR"], as_of=as_of, registry=registry).item(0, 1) == 2024
    )
    assert seen == [FeatureContext(as_of=as_of)]


@pytest.mark.parametrize(
    "name", ["AVG_POINTS_BOUGHT", "member_id", "", "LAST_7_TRANSACTIONS_AVG_REVENUE_USD"]
)
def test_a_name_cannot_be_registered_twice_or_clash(name: str) -> None:
    registry = DEFAULT_REGISTRY.copy()
    with pytest.raises(ValueError, match=repr(name)):
        registry.register(name, lambda ctx: pl.len())


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("AVG_POINTS_BOUGT", "'AVG_POINTS_BOUGHT'"),
        ("PCT_BUY", "'PCT_BUY_TRANSACTIONS'"),
        ("avg_revenue_usd", "'AVG_REVENUE_USD'"),
    ],
)
def test_unknown_feature_is_a_key_error_suggesting_close_names(
    as_of: datetime, name: str, suggestion: str
) -> None:
    with pytest.raises(KeyError, match=suggestion):
        compute_features(_frame([]), [name], as_of=as_of)


def test_unknown_feature_without_close_names_suggests_nothing() -> None:
    with pytest.raises(KeyError) as raised:
        DEFAULT_REGISTRY.get("ZZZ")
    assert "did you mean" not in str(raised.value)


def test_a_feature_named_twice_is_a_value_error(as_of: datetime) -> None:
    with pytest.raises(ValueError, match="AVG_REVENUE_USD"):
        compute_features(_frame([]), ["AVG_REVENUE_USD", "AVG_REVENUE_USD"], as_of=as_of)


@pytest.mark.parametrize(
    "name",
    [
        "LAST_1_TRANSACTIONS_AVG_POINTS_BOUGHT",
        "LAST_12_TRANSACTIONS_AVG_REVENUE_USD",
        "PCT_BUY_TRANSACTIONS_LAST_1_DAYS",
        "PCT_GIFT_TRANSACTIONS_LAST_30_DAYS",
        "PCT_REDEEM_TRANSACTIONS_LAST_365_DAYS",
    ],
)
def test_family_names_resolve_but_are_not_listed(name: str) -> None:
    assert name in DEFAULT_REGISTRY
    assert name in DEFAULT_REGISTRY.copy()
    assert name not in DEFAULT_REGISTRY.names()
    assert callable(DEFAULT_REGISTRY.get(name))


def test_registry_lists_the_family_patterns() -> None:
    assert DEFAULT_REGISTRY.patterns() == (
        "LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT",
        "LAST_<N>_TRANSACTIONS_AVG_REVENUE_USD",
        "PCT_<TYPE>_TRANSACTIONS_LAST_<N>_DAYS",
    )
    assert DEFAULT_REGISTRY.describe().endswith(
        "and the families LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT, "
        "LAST_<N>_TRANSACTIONS_AVG_REVENUE_USD, PCT_<TYPE>_TRANSACTIONS_LAST_<N>_DAYS "
        "(N is a whole number from 1, no leading zeros; TYPE is BUY, GIFT or REDEEM)"
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("LAST_0_TRANSACTIONS_AVG_POINTS_BOUGHT", "N is a whole number from 1, no leading zeros"),
        ("LAST_03_TRANSACTIONS_AVG_POINTS_BOUGHT", "'LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT'"),
        ("pct_gift_transactions_last_7_days", "'PCT_GIFT_TRANSACTIONS_LAST_7_DAYS'"),
        ("PCT_REFUND_TRANSACTIONS_LAST_7_DAYS", "TYPE is BUY, GIFT or REDEEM"),
        ("LAST_5_TRANSACTIONS_AVG_POINT_BOUGHT", "'LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT'"),
        ("PCT_BUY_TRANSACTIONS_LAST_7_DAY", "'PCT_<TYPE>_TRANSACTIONS_LAST_<N>_DAYS'"),
    ],
)
def test_unknown_family_member_is_a_key_error_naming_the_pattern(name: str, hint: str) -> None:
    with pytest.raises(KeyError, match=re.escape(hint)):
        DEFAULT_REGISTRY.get(name)


def test_unknown_feature_without_close_names_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as raised:
        DEFAULT_REGISTRY.get("ZZZ")
    assert raised.value.args[0] == f"unknown feature 'ZZZ'; known: {DEFAULT_REGISTRY.describe()}"


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        *((name, pl.Float64) for name in JOB_ORDER[:-1]),
        ("DAYS_SINCE_LAST_TRANSACTION", pl.Int64),
        ("TRANSACTION_COUNT", pl.Int64),
        ("TOTAL_POINTS_BOUGHT", pl.Float64),
        ("TOTAL_REVENUE_USD", pl.Float64),
        ("DAYS_SINCE_FIRST_TRANSACTION", pl.Int64),
        ("LAST_7_TRANSACTIONS_AVG_POINTS_BOUGHT", pl.Float64),
        ("LAST_7_TRANSACTIONS_AVG_REVENUE_USD", pl.Float64),
        ("PCT_BUY_TRANSACTIONS_LAST_7_DAYS", pl.Float64),
    ],
)
@pytest.mark.parametrize("points", [[], [1.0, 2.0]], ids=["no rows", "rows"])
def test_builtin_dtypes_are_int64_for_counts_and_float64_otherwise(
    as_of: datetime, name: str, dtype: pl.DataType, points: list[float]
) -> None:
    frame = _frame(points).with_columns(pl.col("points", "revenue").cast(pl.Int64))
    result = compute_features(frame, [name], as_of=as_of)
    assert result.schema[name] == dtype


# --- the real file -----------------------------------------------------------------------------


def python_features(path: Path, as_of: datetime) -> dict[str, dict[str, float | int]]:
    """The default features by the letter of the job, in plain Python, for member_data.csv."""
    by_member: dict[str, list[tuple[datetime, int, str, float, float]]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as file:
        records = csv.reader(file)
        next(records)
        for line, record in enumerate(records, start=2):
            member, ts, kind, points, revenue = (value.strip() for value in record)
            if not member or not (ts and kind and points and revenue):
                continue
            moment = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            numbers = (float(points), float(revenue))
            if moment > as_of or kind.lower() not in ("buy", "gift", "redeem"):
                continue
            if not all(math.isfinite(number) for number in numbers):
                continue
            by_member[member].append((moment, line, kind.lower(), *numbers))

    features = {}
    for member, rows in by_member.items():
        rows.sort(key=lambda row: (row[0], row[1]))
        last = rows[-3:]
        n = len(rows)
        features[member] = {
            "AVG_POINTS_BOUGHT": _sum(row[3] for row in rows) / n,
            "AVG_REVENUE_USD": _sum(row[4] for row in rows) / n,
            "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": _sum(row[3] for row in last) / len(last),
            "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": _sum(row[4] for row in last) / len(last),
            "PCT_BUY_TRANSACTIONS": sum(row[2] == "buy" for row in rows) / n,
            "PCT_GIFT_TRANSACTIONS": sum(row[2] == "gift" for row in rows) / n,
            "PCT_REDEEM_TRANSACTIONS": sum(row[2] == "redeem" for row in rows) / n,
            "DAYS_SINCE_LAST_TRANSACTION": (as_of.date() - rows[-1][0].date()).days,
        }
    return features


def _sum(values: Iterable[float]) -> float:
    """Left to right, as written (the built-in sum compensates from Python 3.12 on)."""
    total = 0.0
    for value in values:
        total += value
    return total


# Sums of points are sums of whole numbers, exact in any order, so the points features, the
# shares and the days must match exactly. polars adds floats in its own order (pairwise, in
# lanes, even for three values), so the revenue averages differ from a left-to-right sum in the
# last bit or two (about 95 of the 1780 values). Revenues are non-negative, so either order's
# error is below n * 2**-53 relative (4e-15 for the 31 rows of the busiest member): they are
# compared to 1e-13 relative.
_INEXACT = {"AVG_REVENUE_USD", "LAST_3_TRANSACTIONS_AVG_REVENUE_USD"}


def test_real_file_features_equal_an_independent_computation(member_data: Path) -> None:
    as_of = parse_as_of("2024-01-10")
    read = read_transactions(member_data, as_of=as_of)

    assert (read.rows_in, read.rows_used, read.rows_rejected) == (4335, 4225, 110)
    assert len(read.members) == 990

    features = compute_features(read.transactions, as_of=as_of)
    expected = python_features(member_data, as_of)

    assert features.height == len(expected) == 890
    for row in features.iter_rows(named=True):
        want = expected[row.pop("member_id")]
        for name, value in row.items():
            if name in _INEXACT:
                assert value == pytest.approx(want[name], rel=1e-13, abs=1e-13), name
            else:
                assert value == want[name], name


def test_real_file_feature_frame_is_reproducible(member_data: Path) -> None:
    as_of = parse_as_of("2024-01-10")
    runs = [
        compute_features(read_transactions(member_data, as_of=as_of).transactions, as_of=as_of)
        for _ in range(2)
    ]
    assert_frame_equal(runs[0], runs[1])
    assert runs[0].write_csv() == runs[1].write_csv()


def test_context_date_is_the_utc_date_of_the_as_of() -> None:
    as_of = datetime(2024, 1, 10, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert FeatureContext(as_of=as_of).as_of_date == date(2024, 1, 9)


def test_a_large_input_is_aggregated_in_parts_with_exactly_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "members.csv"
    write_transactions(generate_transactions(300, seed=5), path)
    as_of = parse_as_of("2024-01-10")
    transactions = read_transactions(path, as_of=as_of).transactions
    names = (*DEFAULT_FEATURES, "TRANSACTION_COUNT", "PCT_GIFT_TRANSACTIONS_LAST_30_DAYS")
    whole = compute_features(transactions, names, as_of=as_of)
    monkeypatch.setattr(features_module, "PART_ROWS", 97)  # some 14 parts
    parts = compute_features(transactions, names, as_of=as_of)
    assert transactions.height > 10 * features_module.PART_ROWS
    assert_frame_equal(parts, whole)
