"""The models under the KServe v2 (Open Inference) protocol: ``/v2/models/{ats,resp,offer}``.

An inference request carries one 1-D input tensor per input field of the model, all of the same
length n (member i is the i-th element of each); the answer is one output tensor of n values.
As in KServe, errors answer ``{"error": "..."}``: 404 for an unknown model, 400 for a request
the model cannot answer, including one that fails validation.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, JsonValue, NonNegativeInt
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from offerflow import __version__
from offerflow.serving.catalog import (
    ATS,
    MAX_BATCH,
    MODELS,
    OFFER,
    UNDEFINED,
    Answer,
    ServedModel,
    first_undefined,
)
from offerflow.serving.prediction import Offer
from offerflow.serving.routes import JSONResponse

__all__ = [
    "PLATFORM",
    "InferenceError",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "ModelReady",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerLive",
    "ServerMetadata",
    "ServerReady",
    "TensorMetadata",
    "router",
]

#: the platform the model metadata names
PLATFORM = "offerflow"

# the input names of every model, in the order of their bodies
_INPUT_NAMES: list[JsonValue] = list(dict.fromkeys(ATS.fields + OFFER.fields))
_OUTPUT_DATATYPE: dict[str, Literal["FP64", "BYTES"]] = {"prediction": "FP64", "offer": "BYTES"}
_INPUT_DATATYPE = "FP64"
# how many validation errors a 400 spells out
_ERRORS_SHOWN = 5


class _Wire(BaseModel):
    """A JSON body of the KServe v2 protocol: immutable, floats must be finite."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)


class RequestInput(_Wire):
    """An input tensor: one field of the model, for n members."""

    name: str = Field(
        description="an input field of the model (GET /v2/models/{model} lists them)",
        json_schema_extra={"enum": _INPUT_NAMES},
    )
    shape: list[NonNegativeInt] = Field(
        min_length=1, max_length=1, description=f"[n], n at most {MAX_BATCH}: the tensor is 1-D"
    )
    datatype: Literal["FP64", "FP32", "INT64"] = Field(
        description="values are taken as the JSON numbers they are, FP32 ones are not rounded"
    )
    data: list[float] = Field(max_length=MAX_BATCH, description="n values, member by member")
    parameters: dict[str, Any] | None = Field(default=None, description="ignored")


class RequestOutput(_Wire):
    """An output the client asks for."""

    name: Literal["prediction", "offer"] = Field(description="the model's output")
    parameters: dict[str, Any] | None = Field(default=None, description="ignored")


class InferenceRequest(_Wire):
    """The body of an inference request: one input tensor per input field of the model."""

    id: str | None = Field(default=None, description="echoed in the response")
    parameters: dict[str, Any] | None = Field(default=None, description="ignored")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(
        default=None, description="the outputs to answer; the model has one, answered anyway"
    )


class ResponseOutput(_Wire):
    """An output tensor: the model's answer for each of the n members."""

    name: Literal["prediction", "offer"]
    shape: list[int] = Field(description="[n]")
    datatype: Literal["FP64", "BYTES"] = Field(description="FP64 predictions, BYTES offers")
    data: list[float] | list[Offer]


class InferenceResponse(_Wire):
    """The answer of an inference request."""

    model_name: Literal["ats", "resp", "offer"]
    id: str | SkipJsonSchema[None] = Field(default=None, description="the request's id, if any")
    outputs: list[ResponseOutput]


class InferenceError(_Wire):
    """The answer to a request that failed."""

    error: str


class TensorMetadata(_Wire):
    """An input or output of a model: its name, datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Wire):
    """What a model takes and answers."""

    name: Literal["ats", "resp", "offer"]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(_Wire):
    """The readiness of a model."""

    name: Literal["ats", "resp", "offer"]
    ready: bool


class ServerMetadata(_Wire):
    """The server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class ServerLive(_Wire):
    """The liveness of the server."""

    live: bool


class ServerReady(_Wire):
    """The readiness of the server."""

    ready: bool


def _error(status: int, message: str) -> Response:
    """Return an error response in KServe's shape."""
    return JSONResponse({"error": message}, status_code=status)


def _describe(errors: list[Any]) -> str:
    """Spell out the first few validation errors of a request, on one line."""
    shown = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in errors[:_ERRORS_SHOWN]
    ]
    more = len(errors) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


class _KServeRoute(APIRoute):
    """A route that answers its errors in KServe's shape, ``{"error": "..."}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler to translate its validation and HTTP errors."""
        handle = super().get_route_handler()

        async def handle_kserve(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                return _error(400, _describe(list(exc.errors())))
            except HTTPException as exc:
                return _error(exc.status_code, str(exc.detail))

        return handle_kserve


# "default" documents every error as KServe's, and keeps FastAPI from adding a 422 it never sends.
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": InferenceError, "description": "No model of that name"},
    "default": {"model": InferenceError, "description": "Any other error"},
}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": InferenceError, "description": "A request the model cannot answer"},
    **_ERRORS,
}

router = APIRouter(prefix="/v2", tags=["kserve-v2"], route_class=_KServeRoute)


def _served_model(
    model: Annotated[
        str, Path(description="the model's name", json_schema_extra={"enum": list(MODELS)})
    ],
) -> ServedModel[Any]:
    """Return the model a path names; 404 for an unknown one."""
    served = MODELS.get(model)
    if served is None:
        raise HTTPException(404, f"Model with name {model} does not exist.")
    return served


#: the model a path names, resolved before the body is validated so that 404 wins over 400
_Model = Annotated[ServedModel[Any], Depends(_served_model)]


def _members(model: ServedModel[Any], inference: InferenceRequest) -> list[Any]:
    """Return the members the input tensors describe; 400 when they do not fit the model."""
    tensors: dict[str, RequestInput] = {}
    for tensor in inference.inputs:
        if tensor.name in tensors:
            raise HTTPException(400, f"duplicate input {tensor.name}")
        if tensor.name not in model.fields:
            expected = ", ".join(model.fields)
            raise HTTPException(
                400, f"unexpected input {tensor.name} for model {model.name}, it takes {expected}"
            )
        if tensor.shape[0] != len(tensor.data):
            raise HTTPException(
                400, f"input {tensor.name} has shape {tensor.shape} but {len(tensor.data)} values"
            )
        if tensor.datatype == "INT64" and not all(value.is_integer() for value in tensor.data):
            raise HTTPException(400, f"input {tensor.name} of datatype INT64 holds a non-integer")
        tensors[tensor.name] = tensor
    missing = [name for name in model.fields if name not in tensors]
    if missing:
        raise HTTPException(400, f"missing inputs for model {model.name}: {', '.join(missing)}")
    if len({tensor.shape[0] for tensor in tensors.values()}) > 1:
        shapes = ", ".join(f"{name} {tensors[name].shape}" for name in model.fields)
        raise HTTPException(400, f"the inputs differ in shape: {shapes}")
    columns = [tensors[name].data for name in model.fields]
    return [
        model.inputs.model_validate(dict(zip(model.fields, row, strict=True)))
        for row in zip(*columns, strict=True)
    ]


def _metadata(name: str, datatype: str) -> dict[str, Any]:
    """Return the metadata of a 1-D tensor of any length."""
    return {"name": name, "datatype": datatype, "shape": [-1]}


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> Response:
    """Describe the server."""
    return JSONResponse({"name": PLATFORM, "version": __version__, "extensions": []})


@router.get("/health/live", response_model=ServerLive, summary="Server liveness")
async def server_live() -> Response:
    """Answer that the server is live."""
    return JSONResponse({"live": True})


@router.get("/health/ready", response_model=ServerReady, summary="Server readiness")
async def server_ready() -> Response:
    """Answer that the server is ready: its models need no loading."""
    return JSONResponse({"ready": True})


@router.get(
    "/models/{model}", response_model=ModelMetadata, responses=_ERRORS, summary="Model metadata"
)
async def model_metadata(model: _Model) -> Response:
    """Describe a model's input and output tensors."""
    return JSONResponse(
        {
            "name": model.name,
            "platform": PLATFORM,
            "inputs": [_metadata(name, _INPUT_DATATYPE) for name in model.fields],
            "outputs": [_metadata(model.output, _OUTPUT_DATATYPE[model.output])],
        }
    )


@router.get(
    "/models/{model}/ready", response_model=ModelReady, responses=_ERRORS, summary="Model readiness"
)
async def model_ready(model: _Model) -> Response:
    """Answer that a model is ready."""
    return JSONResponse({"name": model.name, "ready": True})


@router.post(
    "/models/{model}/infer",
    response_model=InferenceResponse,
    responses=_INFER_ERRORS,
    summary="Model inference",
)
async def model_infer(inference: InferenceRequest, model: _Model) -> Response:
    """Answer each member the input tensors describe, in order."""
    members = _members(model, inference)
    answers: list[Answer] = [model.answer(member) for member in members]
    index = first_undefined(answers)
    if index is not None:
        raise HTTPException(400, f"{UNDEFINED} (member {index})")
    output = {
        "name": model.output,
        "shape": [len(answers)],
        "datatype": _OUTPUT_DATATYPE[model.output],
        "data": answers,
    }
    echo = {} if inference.id is None else {"id": inference.id}
    return JSONResponse({"model_name": model.name, **echo, "outputs": [output]})
