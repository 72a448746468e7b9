"""The bundled endpoints over HTTP and their OpenAPI document."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from offerflow.serving import Features, predict_resp
from tests.samples import PLAIN_FEATURES
from tests.serving.calls import post

pytestmark = pytest.mark.anyio

FEATURES = PLAIN_FEATURES
MODEL_PATHS = ["/ml/ats/predict", "/ml/resp/predict"]


# --- the routes over HTTP ---------------------------------------------------------------------


async def test_root_answers_pong(http: aiohttp.ClientSession) -> None:
    async with http.get("/") as response:
        assert response.status == 200
        assert await response.json() == {"msg": "pong"}


async def test_ats_answers_the_prediction(http: aiohttp.ClientSession) -> None:
    assert await post(http, "/ml/ats/predict", FEATURES) == (200, {"prediction": 85.0})


async def test_resp_answers_the_prediction(http: aiohttp.ClientSession) -> None:
    body = FEATURES | {"PCT_BUY_TRANSACTIONS": 1, "PCT_GIFT_TRANSACTIONS": 0}
    body |= {"PCT_REDEEM_TRANSACTIONS": 0, "AVG_REVENUE_USD": 1}
    body |= {"LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 1, "DAYS_SINCE_LAST_TRANSACTION": 9}
    expected = predict_resp(Features(**body))
    assert expected == pytest.approx(0.4)
    assert await post(http, "/ml/resp/predict", body) == (200, {"prediction": expected})


@pytest.mark.parametrize(
    ("ats", "resp", "offer"), [(400.0, 0.5, "OFFER_2"), (399.0, 0.5, "OFFER_1")]
)
async def test_offer_answers_the_offer(
    http: aiohttp.ClientSession, ats: float, resp: float, offer: str
) -> None:
    body = {"ats_prediction": ats, "resp_prediction": resp}
    assert await post(http, "/offer/assign", body) == (200, {"offer": offer})


@pytest.mark.parametrize(
    ("path", "body", "missing"),
    [
        *[(path, FEATURES, "DAYS_SINCE_LAST_TRANSACTION") for path in MODEL_PATHS],
        ("/offer/assign", {"ats_prediction": 1.0, "resp_prediction": 1.0}, "resp_prediction"),
    ],
)
async def test_a_missing_field_is_422_naming_it(
    http: aiohttp.ClientSession, path: str, body: dict[str, float], missing: str
) -> None:
    incomplete = {key: value for key, value in body.items() if key != missing}
    status, answer = await post(http, path, incomplete)
    assert status == 422
    assert [error["loc"] for error in answer["detail"]] == [["body", missing]]


@pytest.mark.parametrize("path", MODEL_PATHS)
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity"])
async def test_a_non_finite_feature_is_422(
    http: aiohttp.ClientSession, path: str, literal: bytes
) -> None:
    body = orjson.dumps(FEATURES).replace(b"100.0", literal)
    headers = {"content-type": "application/json"}
    async with http.post(path, data=body, headers=headers) as response:
        assert response.status == 422
        answer = await response.json()
    assert answer["detail"][0]["loc"] == ["body", "AVG_POINTS_BOUGHT"]


@pytest.mark.parametrize(
    ("path", "overrides"),
    [
        ("/ml/resp/predict", {"DAYS_SINCE_LAST_TRANSACTION": -1}),
        # volume = 1e308, weight = 10: the product overflows to infinity
        ("/ml/ats/predict", {"AVG_POINTS_BOUGHT": 1e308, "PCT_BUY_TRANSACTIONS": 10}),
    ],
    ids=["resp-divides-by-zero", "ats-overflows"],
)
async def test_a_prediction_that_is_not_a_number_is_422(
    http: aiohttp.ClientSession, path: str, overrides: dict[str, float]
) -> None:
    status, answer = await post(http, path, FEATURES | overrides)
    assert status == 422
    assert "not finite" in answer["detail"][0]["msg"]


async def test_json_with_a_charset_goes_through_fastapi(http: aiohttp.ClientSession) -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    async with http.post("/ml/ats/predict", data=orjson.dumps(FEATURES), headers=headers) as r:
        assert (r.status, await r.json()) == (200, {"prediction": 85.0})


async def test_a_body_that_is_not_json_is_422(http: aiohttp.ClientSession) -> None:
    headers = {"content-type": "text/plain"}
    async with http.post("/ml/ats/predict", data=orjson.dumps(FEATURES), headers=headers) as r:
        assert r.status == 422


async def test_a_model_route_refuses_get(http: aiohttp.ClientSession) -> None:
    async with http.get("/ml/ats/predict") as response:
        assert response.status == 405


# --- the OpenAPI document ---------------------------------------------------------------------


@pytest.fixture
async def openapi(http: aiohttp.ClientSession) -> dict[str, Any]:
    """The server's OpenAPI document."""
    async with http.get("/openapi.json") as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
    return document


def schema_ref(operation: dict[str, Any], *where: str) -> str:
    """Return the $ref of the JSON schema of a request body or a 200 response."""
    node: Any = operation
    for key in where:
        node = node[key]
    ref: str = node["content"]["application/json"]["schema"]["$ref"]
    return ref


@pytest.mark.parametrize(
    ("path", "request_schema", "response_schema"),
    [
        ("/ml/ats/predict", "Features", "PredictionResponse"),
        ("/ml/resp/predict", "Features", "PredictionResponse"),
        ("/offer/assign", "Prediction", "OfferResponse"),
    ],
)
async def test_openapi_documents_the_bodies(
    openapi: dict[str, Any], path: str, request_schema: str, response_schema: str
) -> None:
    operation = openapi["paths"][path]["post"]
    assert schema_ref(operation, "requestBody") == f"#/components/schemas/{request_schema}"
    assert schema_ref(operation, "responses", "200") == f"#/components/schemas/{response_schema}"
    assert "422" in operation["responses"]


async def test_openapi_documents_the_ping(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/"]["get"]
    assert schema_ref(operation, "responses", "200") == "#/components/schemas/PingResponse"


async def test_openapi_schemas_list_every_field(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert schemas["Features"]["required"] == list(FEATURES)
    assert {schemas["Features"]["properties"][name]["type"] for name in FEATURES} == {"number"}
    assert schemas["Prediction"]["required"] == ["ats_prediction", "resp_prediction"]
    assert schemas["PredictionResponse"]["required"] == ["prediction"]
    assert schemas["OfferResponse"]["properties"]["offer"]["enum"] == ["OFFER_1", "OFFER_2"]
