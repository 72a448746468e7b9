"""The MLflow scoring-server endpoints: tables, split or as records, answered as single routes."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.serving.mlflow import MlflowFeaturesInput, MlflowPredictionInput
from tests.samples import PLAIN_FEATURES
from tests.serving.calls import (
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

MODELS = ["ats", "resp", "offer"]
FEATURE_NAMES = list(PLAIN_FEATURES)


def path(model: str) -> str:
    """Return the invocations route of a model."""
    return f"/mlflow/{model}/invocations"


def split(bodies: list[dict[str, Any]], columns: list[str] | None = None) -> dict[str, Any]:
    """Return members as a ``dataframe_split`` body, with the given columns in that order."""
    names = list(bodies[0]) if columns is None else columns
    return {"dataframe_split": {"columns": names, "data": [[b[n] for n in names] for b in bodies]}}


async def invoke(http: aiohttp.ClientSession, model: str, body: Any) -> list[Any]:
    """Invoke a model; return its predictions."""
    status, answer = await post(http, path(model), body)
    assert status == 200, answer
    assert list(answer) == ["predictions"]
    predictions: list[Any] = answer["predictions"]
    return predictions


async def refusal(http: aiohttp.ClientSession, model: str, body: Any) -> list[dict[str, Any]]:
    """Invoke a model with a body it must refuse; return the errors of its 422."""
    status, answer = await post(http, path(model), body)
    assert status == 422, answer
    errors: list[dict[str, Any]] = answer["detail"]
    return errors


@pytest.mark.parametrize("model", MODELS)
async def test_a_split_table_is_answered_as_the_single_route(
    http: aiohttp.ClientSession, model: str
) -> None:
    bodies = members(model)
    assert await invoke(http, model, split(bodies)) == await single_answers(http, model, bodies)


@pytest.mark.parametrize("model", MODELS)
async def test_records_answer_what_the_split_table_answers(
    http: aiohttp.ClientSession, model: str
) -> None:
    bodies = members(model)
    records = await invoke(http, model, {"dataframe_records": bodies})
    assert records == await invoke(http, model, split(bodies))


@pytest.mark.parametrize("model", MODELS)
async def test_rows_keep_their_order(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    forward = await invoke(http, model, split(bodies))
    assert await invoke(http, model, split(bodies[::-1])) == forward[::-1]


@pytest.mark.parametrize("model", MODELS)
async def test_columns_may_come_in_any_order(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    reversed_columns = list(bodies[0])[::-1]
    assert await invoke(http, model, split(bodies, reversed_columns)) == await invoke(
        http, model, split(bodies)
    )


@pytest.mark.parametrize("model", MODELS)
async def test_extra_columns_and_keys_are_ignored(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    extra = [{"MEMBER_ID": f"m{i}", **body, "NOTE": None} for i, body in enumerate(bodies)]
    expected = await invoke(http, model, split(bodies))
    assert await invoke(http, model, split(extra)) == expected
    assert await invoke(http, model, {"dataframe_records": extra}) == expected


async def test_an_index_is_ignored_as_pandas_writes_it(http: aiohttp.ClientSession) -> None:
    # pandas' DataFrame.to_dict(orient="split") adds the row labels
    body = split(members("ats"))
    body["dataframe_split"]["index"] = list(range(len(members("ats"))))
    assert await invoke(http, "ats", body) == await invoke(http, "ats", split(members("ats")))


async def test_integer_cells_are_taken_as_the_single_route_takes_them(
    http: aiohttp.ClientSession,
) -> None:
    whole = {name: int(value) for name, value in PLAIN_FEATURES.items() if value.is_integer()}
    body = PLAIN_FEATURES | whole
    assert await invoke(http, "ats", split([body])) == await single_answers(http, "ats", [body])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("table", ["dataframe_split", "dataframe_records"])
async def test_an_empty_table_answers_an_empty_list(
    http: aiohttp.ClientSession, model: str, table: str
) -> None:
    columns = list(members(model)[0])
    body: Any = {"columns": columns, "data": []} if table == "dataframe_split" else []
    assert await invoke(http, model, {table: body}) == []


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        ("ats", ["AVG_POINTS_BOUGHT", "DAYS_SINCE_LAST_TRANSACTION"]),
        ("resp", ["PCT_GIFT_TRANSACTIONS"]),
        ("offer", ["resp_prediction"]),
    ],
)
async def test_missing_columns_are_422_naming_them(
    http: aiohttp.ClientSession, model: str, missing: list[str]
) -> None:
    columns = [name for name in members(model)[0] if name not in missing]
    [error] = await refusal(http, model, split(members(model), columns))
    assert error["loc"] == ["body", "dataframe_split", "columns"]
    assert error["msg"] == f"missing columns: {', '.join(missing)}"


async def test_a_record_without_a_field_is_422_naming_it(http: aiohttp.ClientSession) -> None:
    incomplete = {k: v for k, v in PLAIN_FEATURES.items() if k != "PCT_BUY_TRANSACTIONS"}
    body = {"dataframe_records": [PLAIN_FEATURES, incomplete]}
    [error] = await refusal(http, "resp", body)
    assert error["loc"] == ["body", "dataframe_records", 1, "PCT_BUY_TRANSACTIONS"]


async def test_a_cell_that_is_not_a_number_is_422_naming_its_column(
    http: aiohttp.ClientSession,
) -> None:
    body = split([PLAIN_FEATURES, PLAIN_FEATURES | {"AVG_REVENUE_USD": "lots"}])
    [error] = await refusal(http, "resp", body)
    assert error["loc"] == ["body", "dataframe_split", "data", 1, 1]
    assert error["msg"].startswith("column AVG_REVENUE_USD: ")


async def test_a_row_of_the_wrong_length_is_422(http: aiohttp.ClientSession) -> None:
    body = split([PLAIN_FEATURES, PLAIN_FEATURES])
    body["dataframe_split"]["data"][1].pop()
    [error] = await refusal(http, "ats", body)
    assert error["loc"] == ["body", "dataframe_split", "data", 1]
    assert error["msg"] == "the row has 7 values for 8 columns"


async def test_duplicate_columns_are_422(http: aiohttp.ClientSession) -> None:
    body = split([PLAIN_FEATURES], [*FEATURE_NAMES, "AVG_REVENUE_USD"])
    [error] = await refusal(http, "ats", body)
    assert error["msg"] == "duplicate columns: AVG_REVENUE_USD"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"dataframe_split": {"columns": [], "data": []}, "dataframe_records": []},
    ],
    ids=["neither", "both"],
)
async def test_a_body_needs_exactly_one_table(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    [error] = await refusal(http, "ats", body)
    assert "exactly one of dataframe_split and dataframe_records" in error["msg"]


async def test_an_unknown_key_is_422(http: aiohttp.ClientSession) -> None:
    # MLflow's tensor formats are not served
    errors = await refusal(http, "ats", {"instances": [PLAIN_FEATURES]})
    assert ["body", "instances"] in [error["loc"] for error in errors]


@pytest.mark.parametrize(
    "body",
    [
        # rows that would not do: the length is checked first
        {"dataframe_split": {"columns": FEATURE_NAMES, "data": [[]] * 10_001}},
        {"dataframe_records": [{}] * 10_001},
    ],
    ids=["dataframe_split", "dataframe_records"],
)
async def test_a_table_over_the_cap_is_422(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    [error] = await refusal(http, "ats", body)
    assert "at most 10000 items" in error["msg"]


@pytest.mark.parametrize(
    ("table", "loc"),
    [
        ("dataframe_split", ["body", "dataframe_split", "data", 1]),
        ("dataframe_records", ["body", "dataframe_records", 1]),
    ],
)
async def test_a_prediction_that_is_not_a_number_is_422_naming_the_row(
    http: aiohttp.ClientSession, table: str, loc: list[Any]
) -> None:
    bodies = [PLAIN_FEATURES, PLAIN_FEATURES | {"DAYS_SINCE_LAST_TRANSACTION": -1.0}]
    body = split(bodies) if table == "dataframe_split" else {"dataframe_records": bodies}
    [error] = await refusal(http, "resp", body)
    assert error["loc"] == loc
    assert error["msg"] == "the prediction is not finite for these features"


async def test_a_non_finite_cell_is_422(http: aiohttp.ClientSession) -> None:
    body = orjson.dumps(split([PLAIN_FEATURES])).replace(b"100.0", b"Infinity")
    headers = {"content-type": "application/json"}
    async with http.post(path("ats"), data=body, headers=headers) as response:
        assert response.status == 422
        answer = await response.json()
    assert answer["detail"][0]["loc"] == ["body", "dataframe_split", "data", 0, 0]


# --- the OpenAPI document ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "request_schema", "response_schema"),
    [
        ("ats", "MlflowFeaturesInput", "MlflowPredictions"),
        ("resp", "MlflowFeaturesInput", "MlflowPredictions"),
        ("offer", "MlflowPredictionInput", "MlflowOffers"),
    ],
)
async def test_openapi_documents_the_bodies(
    http: aiohttp.ClientSession, model: str, request_schema: str, response_schema: str
) -> None:
    _, openapi = await get(http, "/openapi.json")
    operation = openapi["paths"][path(model)]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": f"#/components/schemas/{request_schema}"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": f"#/components/schemas/{response_schema}"}


@pytest.mark.parametrize(
    ("request_schema", "record"),
    [("MlflowFeaturesInput", "Features"), ("MlflowPredictionInput", "Prediction")],
)
async def test_openapi_schemas_are_precise(
    http: aiohttp.ClientSession, request_schema: str, record: str
) -> None:
    _, openapi = await get(http, "/openapi.json")
    schemas = openapi["components"]["schemas"]
    body = schemas[request_schema]
    assert body["oneOf"] == [
        {"required": ["dataframe_split"]},
        {"required": ["dataframe_records"]},
    ]
    assert body["additionalProperties"] is False
    records = body["properties"]["dataframe_records"]["anyOf"][0]
    assert records["items"] == {"$ref": f"#/components/schemas/{record}"}
    assert records["maxItems"] == 10_000
    assert body["properties"]["dataframe_split"]["anyOf"][0] == {
        "$ref": "#/components/schemas/DataframeSplit"
    }
    assert schemas["DataframeSplit"]["required"] == ["columns", "data"]
    assert schemas["MlflowOffers"]["properties"]["predictions"]["items"]["enum"] == [
        "OFFER_1",
        "OFFER_2",
    ]


# --- the property, in-process -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(features(), max_size=4),
    offers=st.lists(predictions(), max_size=4),
    order=st.permutations(list(PLAIN_FEATURES)),
)
async def test_tables_answer_what_the_single_routes_answer(
    bodies: list[dict[str, float]], offers: list[dict[str, float]], order: list[str]
) -> None:
    as_split = MlflowFeaturesInput.model_validate(split(bodies, order))
    as_records = MlflowFeaturesInput.model_validate({"dataframe_records": bodies})
    for model in ["ats", "resp"]:
        route = route_function(path(model))
        expected = await single_answers_in_process(model, bodies)
        wanted = None if expected is None else {"predictions": expected}
        assert await answer_in_process(route(as_split)) == wanted
        assert await answer_in_process(route(as_records)) == wanted
    expected = await single_answers_in_process("offer", offers)
    columns = ["resp_prediction", "ats_prediction"]
    offer_route = route_function(path("offer"))
    for body in [split(offers, columns), {"dataframe_records": offers}]:
        table = MlflowPredictionInput.model_validate(body)
        assert await answer_in_process(offer_route(table)) == {"predictions": expected}
