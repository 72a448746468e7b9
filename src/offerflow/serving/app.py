"""The bundled model endpoints as a FastAPI app: ``uvicorn offerflow.serving.app:app``.

The routes validate their bodies with the pydantic models of :mod:`offerflow.serving.prediction`,
answer with orjson, and are documented at ``/openapi.json``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from offerflow import __version__
from offerflow.serving.prediction import (
    Features,
    OfferResponse,
    PingResponse,
    Prediction,
    PredictionResponse,
    assign_offer,
    predict_ats,
    predict_resp,
)

__all__ = ["app"]


class _JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize the content to JSON bytes."""
        return orjson.dumps(content)


def _prediction_body(value: float) -> dict[str, float] | None:
    """Return the body of a model answer, or None when JSON cannot carry it as a number."""
    # orjson would write inf or nan as null, breaking the promise of a float.
    return {"prediction": value} if math.isfinite(value) else None


def _safe_resp(features: Features) -> float:
    """Return the RESP prediction, nan where the formula is undefined."""
    try:
        return predict_resp(features)
    except ZeroDivisionError:
        return math.nan


app = FastAPI(
    title="offerflow bundled model endpoints",
    version=__version__,
    description="The partner's ATS and RESP models and its offer rule (DESIGN.md §4).",
)


@app.exception_handler(RequestValidationError)
async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
    """Answer 422 with the validation errors, as FastAPI does, but also for NaN inputs."""
    # FastAPI's own handler echoes the input with json.dumps, which refuses a NaN the body
    # carried and turns the 422 into a 500; orjson writes it as null.
    return _JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def _out_of_domain(message: str, features: Features) -> RequestValidationError:
    """Return the 422 error for features the formula is undefined or not finite on."""
    error = {"type": "value_error", "loc": ("body",), "msg": message, "input": features}
    return RequestValidationError([error], body=features.model_dump())


def _model_answer(value: float, features: Features) -> Response:
    """Answer a model call, or refuse features whose prediction is not a finite number."""
    answer = _prediction_body(value)
    if answer is None:
        raise _out_of_domain("the prediction is not finite for these features", features)
    return _JSONResponse(answer)


@app.get("/", response_model=PingResponse, summary="Health check")
async def ping() -> Response:
    """Answer that the service is up."""
    return _JSONResponse({"msg": "pong"})


@app.post("/ml/ats/predict", response_model=PredictionResponse, summary="ATS model")
async def ats_predict(features: Features) -> Response:
    """Predict the average transaction size of a member."""
    return _model_answer(predict_ats(features), features)


@app.post("/ml/resp/predict", response_model=PredictionResponse, summary="RESP model")
async def resp_predict(features: Features) -> Response:
    """Predict the probability that a member responds to an offer."""
    return _model_answer(_safe_resp(features), features)


@app.post("/offer/assign", response_model=OfferResponse, summary="Offer rule")
async def offer_assign(prediction: Prediction) -> Response:
    """Assign an offer to a member's predictions."""
    return _JSONResponse({"offer": assign_offer(prediction)})
