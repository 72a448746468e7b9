"""The catalog of served models: what each takes and answers, and where every protocol serves it."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest

from offerflow.config import PROTOCOLS, ProtocolName
from offerflow.serving import Features, Prediction
from offerflow.serving.catalog import MODELS, RESP, Answer, ServedModel, defined, first_undefined
from tests.samples import PLAIN_FEATURES
from tests.serving.calls import members, post


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


def one_member_call(
    protocol: ProtocolName, model: ServedModel[Any], member: dict[str, float]
) -> tuple[str, Any]:
    """Return the path the catalog names for a model under a protocol, and a body of one member."""
    match protocol:
        case "json":
            return model.json_path, member
        case "json-batch":
            return model.batch_path, {"instances": [member]}
        case "mlflow":
            return model.mlflow_path, {"dataframe_records": [member]}
        case "kserve-v2":
            tensors = [
                {"name": name, "shape": [1], "datatype": "FP64", "data": [value]}
                for name, value in member.items()
            ]
            return model.kserve_path, {"inputs": tensors}


def only_answer(protocol: ProtocolName, response: Any) -> Any:
    """Return the one answer a response to a one-member call carries."""
    match protocol:
        case "json":
            [answer] = response.values()
        case "json-batch" | "mlflow":
            [[answer]] = response.values()
        case "kserve-v2":
            [output] = response["outputs"]
            [answer] = output["data"]
    return answer


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
async def test_every_model_is_served_under_every_protocol_at_the_path_the_catalog_names(
    http: aiohttp.ClientSession, model: ServedModel[Any], protocol: ProtocolName
) -> None:
    member = members(model.name)[0]
    status, response = await post(http, *one_member_call(protocol, model, member))
    assert status == 200, response
    assert only_answer(protocol, response) == model.answer(model.inputs.model_validate(member))
