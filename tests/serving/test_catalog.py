"""The catalog of served models: the names, inputs and outputs every protocol answers with."""

from __future__ import annotations

import math

import pytest

from offerflow.serving import Features, Prediction
from offerflow.serving.catalog import MODELS, RESP, Answer, defined, first_undefined
from tests.samples import PLAIN_FEATURES


def test_the_three_models_are_served_by_name() -> None:
    assert {name: (model.inputs, model.output) for name, model in MODELS.items()} == {
        "ats": (Features, "prediction"),
        "resp": (Features, "prediction"),
        "offer": (Prediction, "offer"),
    }


def test_the_fields_follow_the_bodies() -> None:
    assert MODELS["ats"].fields == tuple(PLAIN_FEATURES)
    assert MODELS["offer"].fields == ("ats_prediction", "resp_prediction")


def test_resp_answers_nan_where_its_formula_is_undefined() -> None:
    features = Features(**(PLAIN_FEATURES | {"DAYS_SINCE_LAST_TRANSACTION": -1.0}))
    assert math.isnan(float(RESP.answer(features)))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(0.0, True), (-1e308, True), ("OFFER_1", True), (math.inf, False), (math.nan, False)],
)
def test_an_answer_is_defined_when_json_carries_it(answer: Answer, expected: bool) -> None:
    assert defined(answer) is expected


@pytest.mark.parametrize(
    ("answers", "index"),
    [([], None), ([1.0, "OFFER_2"], None), ([1.0, math.nan, math.inf], 1)],
)
def test_first_undefined_finds_the_first_answer_json_cannot_carry(
    answers: list[Answer], index: int | None
) -> None:
    assert first_undefined(answers) == index
