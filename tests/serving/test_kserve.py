"""The KServe v2 (Open Inference Protocol) endpoints: columnar tensors in, one tensor out."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow import __version__
from offerflow.serving.catalog import MODELS as SERVED
from offerflow.serving.kserve import InferenceRequest, model_infer
from tests.samples import PLAIN_FEATURES
from tests.serving.calls import (
    answer_in_process,
    features,
    get,
    members,
    post,
    predictions,
    single_answers,
    single_answers_in_process,
)

pytestmark = pytest.mark.anyio

MODELS = ["ats", "resp", "offer"]
OUTPUTS = {
    "ats": ("prediction", "FP64"),
    "resp": ("prediction", "FP64"),
    "offer": ("offer", "BYTES"),
}


def path(model: str) -> str:
    """Return the inference route of a model."""
    return f"/v2/models/{model}/infer"


def fields(model: str) -> list[str]:
    """Return the input fields of a model, in the order of its body."""
    return list(members(model)[0])


def tensors(
    bodies: list[dict[str, Any]], names: list[str], datatype: str = "FP64"
) -> list[dict[str, Any]]:
    """Return members as one input tensor per field, in the given order of fields."""
    return [
        {
            "name": name,
            "shape": [len(bodies)],
            "datatype": datatype,
            "data": [b[name] for b in bodies],
        }
        for name in names
    ]


def inference(model: str, bodies: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Return the inference request of a model for members."""
    return {"inputs": tensors(bodies, fields(model)), **extra}


async def infer(http: aiohttp.ClientSession, model: str, body: Any) -> dict[str, Any]:
    """Ask a model to infer; return the whole answer."""
    status, answer = await post(http, path(model), body)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def data(answer: dict[str, Any]) -> list[Any]:
    """Return the data of the one output tensor of an answer."""
    [output] = answer["outputs"]
    values: list[Any] = output["data"]
    return values


async def error(http: aiohttp.ClientSession, model: str, body: Any, status: int = 400) -> str:
    """Ask a model to infer a request it must refuse; return the message of the error."""
    got, answer = await post(http, path(model), body)
    assert got == status, answer
    assert list(answer) == ["error"]
    message: str = answer["error"]
    return message


# --- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_answers_equal_the_single_route(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    answer = await infer(http, model, inference(model, bodies))
    name, datatype = OUTPUTS[model]
    assert answer == {
        "model_name": model,
        "outputs": [
            {
                "name": name,
                "shape": [len(bodies)],
                "datatype": datatype,
                "data": await single_answers(http, model, bodies),
            }
        ],
    }


@pytest.mark.parametrize("model", MODELS)
async def test_answers_keep_the_order_of_the_members(
    http: aiohttp.ClientSession, model: str
) -> None:
    bodies = members(model)
    forward = data(await infer(http, model, inference(model, bodies)))
    assert data(await infer(http, model, inference(model, bodies[::-1]))) == forward[::-1]


@pytest.mark.parametrize("model", MODELS)
async def test_inputs_may_come_in_any_order(http: aiohttp.ClientSession, model: str) -> None:
    bodies = members(model)
    shuffled = {"inputs": tensors(bodies, fields(model)[::-1])}
    assert data(await infer(http, model, shuffled)) == data(
        await infer(http, model, inference(model, bodies))
    )


@pytest.mark.parametrize("model", MODELS)
async def test_an_empty_tensor_answers_an_empty_tensor(
    http: aiohttp.ClientSession, model: str
) -> None:
    [output] = (await infer(http, model, inference(model, [])))["outputs"]
    assert (output["shape"], output["data"]) == ([0], [])


@pytest.mark.parametrize("request_id", ["42", ""])
async def test_the_request_id_is_echoed(http: aiohttp.ClientSession, request_id: str) -> None:
    answer = await infer(http, "ats", inference("ats", [PLAIN_FEATURES], id=request_id))
    assert answer["id"] == request_id


async def test_int64_and_fp32_tensors_are_taken_as_their_json_numbers(
    http: aiohttp.ClientSession,
) -> None:
    whole = PLAIN_FEATURES | {"PCT_BUY_TRANSACTIONS": 1, "PCT_GIFT_TRANSACTIONS": 0}
    whole |= {"PCT_REDEEM_TRANSACTIONS": 0}
    as_int = {name: int(value) for name, value in whole.items()}
    int64 = {"inputs": tensors([as_int], fields("ats"), datatype="INT64")}
    assert data(await infer(http, "ats", int64)) == await single_answers(http, "ats", [as_int])
    fp32 = {"inputs": tensors(members("ats"), fields("ats"), datatype="FP32")}
    assert data(await infer(http, "ats", fp32)) == await single_answers(http, "ats", members("ats"))


async def test_asking_for_the_output_by_name_is_fine(http: aiohttp.ClientSession) -> None:
    body = inference("offer", members("offer"), outputs=[{"name": "offer"}])
    assert data(await infer(http, "offer", body)) == await single_answers(
        http, "offer", members("offer")
    )


async def test_parameters_are_ignored(http: aiohttp.ClientSession) -> None:
    body = inference("ats", [PLAIN_FEATURES], parameters={"content_type": "np"})
    assert data(await infer(http, "ats", body)) == [85.0]


# --- errors as KServe answers them ------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v2/models/{}", "/v2/models/{}/ready"])
async def test_an_unknown_model_is_404(http: aiohttp.ClientSession, route: str) -> None:
    assert await get(http, route.format("nope")) == (
        404,
        {"error": "Model with name nope does not exist."},
    )


@pytest.mark.parametrize("body", [inference("ats", [PLAIN_FEATURES]), {"inputs": "nonsense"}])
async def test_inferring_with_an_unknown_model_is_404_whatever_the_body(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    assert await error(http, "nope", body, 404) == "Model with name nope does not exist."


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        ("ats", ["DAYS_SINCE_LAST_TRANSACTION"]),
        ("resp", ["AVG_POINTS_BOUGHT", "PCT_GIFT_TRANSACTIONS"]),
        ("offer", ["ats_prediction"]),
    ],
)
async def test_a_missing_input_is_400_naming_it(
    http: aiohttp.ClientSession, model: str, missing: list[str]
) -> None:
    body = {
        "inputs": [t for t in tensors(members(model), fields(model)) if t["name"] not in missing]
    }
    message = await error(http, model, body)
    assert message == f"missing inputs for model {model}: {', '.join(missing)}"


async def test_inputs_of_different_lengths_are_400(http: aiohttp.ClientSession) -> None:
    inputs = tensors(members("ats"), fields("ats"))
    inputs[2] = inputs[2] | {"shape": [1], "data": inputs[2]["data"][:1]}
    message = await error(http, "ats", {"inputs": inputs})
    assert message.startswith("the inputs differ in shape: ")
    assert "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT [1]" in message


async def test_a_shape_that_does_not_fit_the_data_is_400(http: aiohttp.ClientSession) -> None:
    inputs = tensors(members("ats"), fields("ats"))
    inputs[0] = inputs[0] | {"shape": [99]}
    message = await error(http, "ats", {"inputs": inputs})
    assert message == f"input AVG_POINTS_BOUGHT has shape [99] but {len(members('ats'))} values"


async def test_a_tensor_of_two_dimensions_is_400(http: aiohttp.ClientSession) -> None:
    inputs = tensors([PLAIN_FEATURES], fields("ats"))
    inputs[0] = inputs[0] | {"shape": [1, 1]}
    message = await error(http, "ats", {"inputs": inputs})
    assert message.startswith("body.inputs.0.shape: List should have at most 1 item")


async def test_an_unexpected_input_is_400(http: aiohttp.ClientSession) -> None:
    inputs = tensors([PLAIN_FEATURES], fields("ats")) + tensors(
        [{"ats_prediction": 1.0}], ["ats_prediction"]
    )
    message = await error(http, "ats", {"inputs": inputs})
    assert message.startswith("unexpected input ats_prediction for model ats, it takes ")


async def test_a_duplicate_input_is_400(http: aiohttp.ClientSession) -> None:
    inputs = tensors([PLAIN_FEATURES], fields("ats"))
    message = await error(http, "ats", {"inputs": [*inputs, inputs[3]]})
    assert message == "duplicate input LAST_3_TRANSACTIONS_AVG_REVENUE_USD"


async def test_an_int64_tensor_of_fractions_is_400(http: aiohttp.ClientSession) -> None:
    message = await error(
        http, "ats", {"inputs": tensors([PLAIN_FEATURES], fields("ats"), datatype="INT64")}
    )
    assert message == "input PCT_BUY_TRANSACTIONS of datatype INT64 holds a non-integer"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            {"inputs": tensors([PLAIN_FEATURES], fields("ats"), datatype="BYTES")},
            "body.inputs.0.datatype: ",
        ),
        ({"inputs": [{"name": "AVG_POINTS_BOUGHT"}]}, "body.inputs.0.shape: Field required"),
        ({"id": 1, "inputs": []}, "body.id: Input should be a valid string"),
        ({}, "body.inputs: Field required"),
        (inference("ats", [PLAIN_FEATURES], outputs=[{"name": "x"}]), "body.outputs.0.name: "),
    ],
    ids=["datatype", "no-shape", "numeric-id", "no-inputs", "unknown-output"],
)
async def test_a_request_that_fails_validation_is_400(
    http: aiohttp.ClientSession, body: dict[str, Any], where: str
) -> None:
    assert (await error(http, "ats", body)).startswith(where)


async def test_a_body_that_is_not_json_is_400(http: aiohttp.ClientSession) -> None:
    headers = {"content-type": "application/json"}
    async with http.post(path("ats"), data=b"{", headers=headers) as response:
        assert response.status == 400
        assert "JSON decode error" in (await response.json())["error"]


async def test_a_non_finite_value_is_400(http: aiohttp.ClientSession) -> None:
    body = b'{"inputs": [{"name": "ats_prediction", "shape": [1], "datatype": "FP64", '
    body += b'"data": [NaN]}]}'
    headers = {"content-type": "application/json"}
    async with http.post(path("offer"), data=body, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"].startswith("body.inputs.0.data.0: ")


async def test_a_prediction_that_is_not_a_number_is_400(http: aiohttp.ClientSession) -> None:
    bodies = [PLAIN_FEATURES, PLAIN_FEATURES | {"DAYS_SINCE_LAST_TRANSACTION": -1.0}]
    message = await error(http, "resp", inference("resp", bodies))
    assert message == "the prediction is not finite for these features (member 1)"


async def test_a_tensor_over_the_cap_is_400(http: aiohttp.ClientSession) -> None:
    inputs = [{"name": "AVG_POINTS_BOUGHT", "shape": [10_001], "datatype": "FP64"}]
    inputs[0]["data"] = [0.0] * 10_001
    message = await error(http, "ats", {"inputs": inputs})
    assert message.startswith("body.inputs.0.data: List should have at most 10000 items")


# --- health and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "answer"),
    [
        ("/v2/health/ready", {"ready": True}),
        ("/v2/health/live", {"live": True}),
        ("/v2", {"name": "offerflow", "version": __version__, "extensions": []}),
    ],
)
async def test_the_server_is_ready_and_describes_itself(
    http: aiohttp.ClientSession, route: str, answer: dict[str, Any]
) -> None:
    assert await get(http, route) == (200, answer)


@pytest.mark.parametrize("model", MODELS)
async def test_a_model_is_ready(http: aiohttp.ClientSession, model: str) -> None:
    assert await get(http, f"/v2/models/{model}/ready") == (200, {"name": model, "ready": True})


@pytest.mark.parametrize("model", MODELS)
async def test_a_model_describes_its_tensors(http: aiohttp.ClientSession, model: str) -> None:
    name, datatype = OUTPUTS[model]
    assert await get(http, f"/v2/models/{model}") == (
        200,
        {
            "name": model,
            "platform": "offerflow",
            "inputs": [
                {"name": field, "datatype": "FP64", "shape": [-1]} for field in fields(model)
            ],
            "outputs": [{"name": name, "datatype": datatype, "shape": [-1]}],
        },
    )


# --- the OpenAPI document ---------------------------------------------------------------------


async def test_openapi_documents_the_inference_bodies(http: aiohttp.ClientSession) -> None:
    _, openapi = await get(http, "/openapi.json")
    operation = openapi["paths"]["/v2/models/{model}/infer"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/InferenceRequest"}
    responses = operation["responses"]
    assert set(responses) == {"200", "400", "404", "default"}
    ref = {"$ref": "#/components/schemas/InferenceResponse"}
    assert responses["200"]["content"]["application/json"]["schema"] == ref
    error = {"$ref": "#/components/schemas/InferenceError"}
    assert responses["400"]["content"]["application/json"]["schema"] == error
    [parameter] = operation["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("model", "path", True)
    assert parameter["schema"]["enum"] == MODELS


async def test_openapi_inference_schemas_are_precise(http: aiohttp.ClientSession) -> None:
    _, openapi = await get(http, "/openapi.json")
    schemas = openapi["components"]["schemas"]
    assert schemas["InferenceRequest"]["required"] == ["inputs"]
    tensor = schemas["RequestInput"]
    assert tensor["required"] == ["name", "shape", "datatype", "data"]
    assert tensor["properties"]["datatype"]["enum"] == ["FP64", "FP32", "INT64"]
    assert tensor["properties"]["data"]["items"] == {"type": "number"}
    assert tensor["properties"]["shape"]["maxItems"] == 1
    names = set(tensor["properties"]["name"]["enum"])
    assert names == {field for model in SERVED.values() for field in model.fields}
    assert schemas["InferenceResponse"]["required"] == ["model_name", "outputs"]
    assert schemas["ResponseOutput"]["required"] == ["name", "shape", "datatype", "data"]
    assert schemas["InferenceError"]["required"] == ["error"]


@pytest.mark.parametrize(
    ("route", "schema"),
    [
        ("/v2/health/ready", "ServerReady"),
        ("/v2/health/live", "ServerLive"),
        ("/v2", "ServerMetadata"),
        ("/v2/models/{model}", "ModelMetadata"),
        ("/v2/models/{model}/ready", "ModelReady"),
    ],
)
async def test_openapi_documents_the_metadata_routes(
    http: aiohttp.ClientSession, route: str, schema: str
) -> None:
    _, openapi = await get(http, "/openapi.json")
    responses = openapi["paths"][route]["get"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{schema}"
    }
    assert "422" not in responses


# --- the property, in-process -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(features(), max_size=4),
    offers=st.lists(predictions(), max_size=4),
    order=st.permutations(list(PLAIN_FEATURES)),
)
async def test_inference_answers_what_the_single_routes_answer(
    bodies: list[dict[str, float]], offers: list[dict[str, float]], order: list[str]
) -> None:
    for model, members_, names in [
        ("ats", bodies, order),
        ("resp", bodies, order[::-1]),
        ("offer", offers, ["resp_prediction", "ats_prediction"]),
    ]:
        request = InferenceRequest.model_validate({"inputs": tensors(members_, names)})
        expected = await single_answers_in_process(model, members_)
        answer = await answer_in_process(model_infer(request, SERVED[model]))
        assert (None if answer is None else data(answer)) == expected
