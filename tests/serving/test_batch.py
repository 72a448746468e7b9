"""The json-batch endpoints: many members per call, each answered as the single routes do."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.serving.batch import FeaturesBatch, PredictionBatch
from tests.samples import PLAIN_FEATURES
from tests.serving.calls import (
    FEATURES,
    PREDICTIONS,
    answer_in_process,
    features,
    get,
    members,
    post,
    predictions,
    route_function,
    single_answers,
    single_answers_in_process,
)

pytestmark = pytest.mark.anyio

#: the batch route of each model, and the field of its answer
BATCH_ROUTES = {
    "ats": ("/ml/ats/predict/batch", "predictions"),
    "resp": ("/ml/resp/predict/batch", "predictions"),
    "offer": ("/offer/assign/batch", "offers"),
}
MODELS = list(BATCH_ROUTES)


async def batch(http: aiohttp.ClientSession, model: str, bodies: list[Any]) -> list[Any]:
    """Ask a model's batch route for the members' answers."""
    path, field = BATCH_ROUTES[model]
    status, answer = await post(http, path, {"instances": bodies})
    assert status == 200, answer
    assert list(answer) == [field]
    answers: list[Any] = answer[field]
    return answers


@pytest.mark.parametrize("model", MODELS)
async def test_answers_equal_the_single_route(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    assert await batch(http, model, bodies) == await single_answers(http, model, bodies)


@pytest.mark.parametrize("model", MODELS)
async def test_answers_keep_the_order_of_the_instances(
    http: aiohttp.ClientSession, model: str
) -> None:
    bodies = members(model)
    forward = await batch(http, model, bodies)
    assert await batch(http, model, bodies[::-1]) == forward[::-1]


@pytest.mark.parametrize("model", MODELS)
async def test_an_empty_batch_answers_an_empty_list(
    http: aiohttp.ClientSession, model: str
) -> None:
    assert await batch(http, model, []) == []


async def test_a_batch_of_the_cap_is_answered(http: aiohttp.ClientSession) -> None:
    assert await batch(http, "ats", [PLAIN_FEATURES] * 10_000) == [85.0] * 10_000


@pytest.mark.parametrize("model", MODELS)
async def test_a_batch_over_the_cap_is_422(http: aiohttp.ClientSession, model: str) -> None:
    status, answer = await post(http, BATCH_ROUTES[model][0], {"instances": [{}] * 10_001})
    assert status == 422
    [error] = answer["detail"]
    assert error["loc"] == ["body", "instances"]
    assert "at most 10000 items" in error["msg"]


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        ("ats", "DAYS_SINCE_LAST_TRANSACTION"),
        ("resp", "AVG_REVENUE_USD"),
        ("offer", "ats_prediction"),
    ],
)
async def test_a_missing_field_is_422_naming_the_instance_and_field(
    http: aiohttp.ClientSession, model: str, missing: str
) -> None:
    good = members(model)[0]
    incomplete = {key: value for key, value in good.items() if key != missing}
    status, answer = await post(http, BATCH_ROUTES[model][0], {"instances": [good, incomplete]})
    assert status == 422
    assert [error["loc"] for error in answer["detail"]] == [["body", "instances", 1, missing]]
    assert answer["detail"][0]["msg"] == "Field required"


@pytest.mark.parametrize("model", MODELS)
async def test_a_body_without_instances_is_422(http: aiohttp.ClientSession, model: str) -> None:
    status, answer = await post(http, BATCH_ROUTES[model][0], members(model))
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body"]


async def test_a_non_finite_feature_is_422(http: aiohttp.ClientSession) -> None:
    body = orjson.dumps({"instances": [PLAIN_FEATURES, PLAIN_FEATURES]})
    body = body.replace(b"100.0", b"NaN", 2)
    headers = {"content-type": "application/json"}
    async with http.post("/ml/ats/predict/batch", data=body, headers=headers) as response:
        assert response.status == 422
        answer = await response.json()
    assert answer["detail"][0]["loc"] == ["body", "instances", 0, "AVG_POINTS_BOUGHT"]


@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        ("resp", {"DAYS_SINCE_LAST_TRANSACTION": -1}),
        ("ats", {"AVG_POINTS_BOUGHT": 1e308, "PCT_BUY_TRANSACTIONS": 10}),
    ],
    ids=["resp-divides-by-zero", "ats-overflows"],
)
async def test_a_prediction_that_is_not_a_number_is_422_naming_the_instance(
    http: aiohttp.ClientSession, model: str, overrides: dict[str, float]
) -> None:
    instances = [PLAIN_FEATURES, PLAIN_FEATURES | overrides, PLAIN_FEATURES]
    status, answer = await post(http, BATCH_ROUTES[model][0], {"instances": instances})
    assert status == 422
    [error] = answer["detail"]
    assert error["loc"] == ["body", "instances", 1]
    assert error["msg"] == "the prediction is not finite for these features"


# --- the OpenAPI document ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "request_schema", "response_schema"),
    [
        ("ats", "FeaturesBatch", "PredictionsResponse"),
        ("resp", "FeaturesBatch", "PredictionsResponse"),
        ("offer", "PredictionBatch", "OffersResponse"),
    ],
)
async def test_openapi_documents_the_bodies(
    http: aiohttp.ClientSession, model: str, request_schema: str, response_schema: str
) -> None:
    _, openapi = await get(http, "/openapi.json")
    operation = openapi["paths"][BATCH_ROUTES[model][0]]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": f"#/components/schemas/{request_schema}"}
    assert operation["requestBody"]["required"] is True
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": f"#/components/schemas/{response_schema}"}
    assert "422" in operation["responses"]


async def test_openapi_schemas_are_precise(http: aiohttp.ClientSession) -> None:
    _, openapi = await get(http, "/openapi.json")
    schemas = openapi["components"]["schemas"]
    for name, member in [("FeaturesBatch", "Features"), ("PredictionBatch", "Prediction")]:
        assert schemas[name]["required"] == ["instances"]
        instances = schemas[name]["properties"]["instances"]
        assert instances["items"] == {"$ref": f"#/components/schemas/{member}"}
        assert instances["maxItems"] == 10_000
    predictions = schemas["PredictionsResponse"]["properties"]["predictions"]
    assert predictions["items"] == {"type": "number"}
    offers = schemas["OffersResponse"]["properties"]["offers"]
    assert offers["items"]["enum"] == ["OFFER_1", "OFFER_2"]


# --- the property, in-process -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(bodies=st.lists(features(), max_size=4), offers=st.lists(predictions(), max_size=4))
async def test_batches_answer_what_the_single_routes_answer(
    bodies: list[dict[str, float]], offers: list[dict[str, float]]
) -> None:
    features_batch = FeaturesBatch.model_validate({"instances": bodies})
    for model in ["ats", "resp"]:
        route = route_function(BATCH_ROUTES[model][0])
        expected = await single_answers_in_process(model, bodies)
        answer = await answer_in_process(route(features_batch))
        assert answer == (None if expected is None else {"predictions": expected})
    expected = await single_answers_in_process("offer", offers)
    offer_route = route_function(BATCH_ROUTES["offer"][0])
    answer = await answer_in_process(
        offer_route(PredictionBatch.model_validate({"instances": offers}))
    )
    assert answer == {"offers": expected}


def test_the_hand_built_members_are_distinct() -> None:
    # Order tests need members whose answers differ.
    assert len({orjson.dumps(body) for body in FEATURES}) == len(FEATURES)
    assert len({orjson.dumps(body) for body in PREDICTIONS}) == len(PREDICTIONS)
