"""The model formulas of the bundled models on hand-computed cases, and the bodies' validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from offerflow.serving import Features, Prediction, assign_offer, predict_ats, predict_resp
from tests.samples import PLAIN_FEATURES


def features(**overrides: float) -> Features:
    """Return features of a plain member, with some fields replaced."""
    return Features(**(PLAIN_FEATURES | overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # volume = 0.7·200 + 0.3·100 = 170, weight = 0.5 + 0.25 - 0.25 = 0.5
        pytest.param({}, 85.0, id="plain"),
        # weight = 0 + 0 - 1 < 0, clamped to 0
        pytest.param(
            {"PCT_BUY_TRANSACTIONS": 0, "PCT_GIFT_TRANSACTIONS": 0, "PCT_REDEEM_TRANSACTIONS": 1},
            0.0,
            id="weight-clamped-to-0",
        ),
        # volume = 0.7·(-100) + 0.3·(-50) = -85, weight = 1, |-85| = 85
        pytest.param(
            {
                "AVG_POINTS_BOUGHT": -50,
                "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": -100,
                "PCT_BUY_TRANSACTIONS": 1,
                "PCT_GIFT_TRANSACTIONS": 0,
                "PCT_REDEEM_TRANSACTIONS": 0,
            },
            85.0,
            id="negative-volume-made-positive",
        ),
        # volume = 0.7·10 + 0.3·20 = 13, weight = 0.6 + 0.6 - 0.2 = 1
        pytest.param(
            {
                "AVG_POINTS_BOUGHT": 20,
                "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 10,
                "PCT_BUY_TRANSACTIONS": 0.6,
                "PCT_GIFT_TRANSACTIONS": 0.6,
                "PCT_REDEEM_TRANSACTIONS": 0.2,
            },
            13.0,
            id="weights-last-3-over-average",
        ),
    ],
)
def test_ats_follows_the_formula(overrides: dict[str, float], expected: float) -> None:
    assert predict_ats(features(**overrides)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # product = 0.4, revenue = (0.3 + 0.7)/100 = 0.01, day = 1/10: 1000·0.4·0.01·0.1 = 0.4
        pytest.param(
            {
                "PCT_BUY_TRANSACTIONS": 1,
                "PCT_GIFT_TRANSACTIONS": 0,
                "PCT_REDEEM_TRANSACTIONS": 0,
                "AVG_REVENUE_USD": 1,
                "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 1,
                "DAYS_SINCE_LAST_TRANSACTION": 9,
            },
            0.4,
            id="below-the-cap",
        ),
        # product = 0.3, revenue = (0.3·10 + 0.7·0)/100 = 0.03, day = 1: 1000·0.3·0.03 = 9 → 0.9
        pytest.param(
            {
                "PCT_BUY_TRANSACTIONS": 0,
                "PCT_GIFT_TRANSACTIONS": 1,
                "PCT_REDEEM_TRANSACTIONS": 0,
                "AVG_REVENUE_USD": 10,
                "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 0,
                "DAYS_SINCE_LAST_TRANSACTION": 0,
            },
            0.9,
            id="clamped-at-0.9",
        ),
        # product = 0.35, revenue = 0.17, day = 0.25: 14.875 → 0.9
        pytest.param({}, 0.9, id="plain-member-clamped"),
        # product = 0.3, revenue = (0 + 0.7·1)/100, day = 1/1000: 1000·0.3·0.007·0.001 = 0.0021
        pytest.param(
            {
                "PCT_BUY_TRANSACTIONS": 0,
                "PCT_GIFT_TRANSACTIONS": 0,
                "PCT_REDEEM_TRANSACTIONS": 1,
                "AVG_REVENUE_USD": 0,
                "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 1,
                "DAYS_SINCE_LAST_TRANSACTION": 999,
            },
            0.0021,
            id="redeem-only-long-ago",
        ),
        pytest.param(
            {"AVG_REVENUE_USD": 0, "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 0}, 0.0, id="no-revenue"
        ),
    ],
)
def test_resp_follows_the_formula(overrides: dict[str, float], expected: float) -> None:
    assert predict_resp(features(**overrides)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_resp_is_undefined_one_day_before_the_last_transaction() -> None:
    with pytest.raises(ZeroDivisionError):
        predict_resp(features(DAYS_SINCE_LAST_TRANSACTION=-1))


def test_formulas_evaluate_in_the_documented_order() -> None:
    # Values whose float results depend on the order of operations.
    f = features(
        AVG_POINTS_BOUGHT=0.1,
        LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT=0.7,
        PCT_BUY_TRANSACTIONS=0.1,
        PCT_GIFT_TRANSACTIONS=0.2,
        PCT_REDEEM_TRANSACTIONS=0.3,
        AVG_REVENUE_USD=0.1,
        LAST_3_TRANSACTIONS_AVG_REVENUE_USD=0.3,
        DAYS_SINCE_LAST_TRANSACTION=0.1,
    )
    volume = 0.7 * 0.7 + 0.3 * 0.1
    weight = max(0, 0.1 + 0.2 - 0.3)
    assert predict_ats(f) == abs(volume * weight)
    product = 0.4 * 0.1 + 0.3 * 0.2 + 0.3 * 0.3
    revenue = (0.3 * 0.1 + 0.7 * 0.3) / 100
    day = 1 / (0.1 + 1)
    assert predict_resp(f) == min(0.9, 1000 * product * revenue * day)


@pytest.mark.parametrize(
    ("ats", "resp", "offer"),
    [
        pytest.param(400.0, 0.5, "OFFER_2", id="exactly-200"),
        pytest.param(1000.0, 0.9, "OFFER_2", id="above"),
        pytest.param(199.0, 1.0, "OFFER_1", id="below"),
        pytest.param(0.0, 0.0, "OFFER_1", id="zero"),
        pytest.param(-400.0, -0.5, "OFFER_2", id="two-negatives"),
    ],
)
def test_offer_two_from_a_product_of_200(ats: float, resp: float, offer: str) -> None:
    assert assign_offer(Prediction(ats_prediction=ats, resp_prediction=resp)) == offer


def test_offer_one_just_below_200() -> None:
    ats = math.nextafter(200.0, 0.0)
    assert assign_offer(Prediction(ats_prediction=ats, resp_prediction=1.0)) == "OFFER_1"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["AVG_POINTS_BOUGHT", "DAYS_SINCE_LAST_TRANSACTION"])
def test_features_must_be_finite(field: str, bad: float) -> None:
    with pytest.raises(ValidationError, match=field):
        features(**{field: bad})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_predictions_must_be_finite(bad: float) -> None:
    with pytest.raises(ValidationError, match="resp_prediction"):
        Prediction(ats_prediction=1.0, resp_prediction=bad)


def test_features_need_all_eight_fields() -> None:
    values: dict[str, Any] = features().model_dump()
    del values["PCT_GIFT_TRANSACTIONS"]
    with pytest.raises(ValidationError, match="PCT_GIFT_TRANSACTIONS"):
        Features(**values)


def test_features_are_the_eight_documented_fields() -> None:
    assert tuple(Features.model_fields) == tuple(PLAIN_FEATURES)
