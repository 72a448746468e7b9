"""The bundled model endpoints as a FastAPI app: ``uvicorn offerflow.serving.app:app``.

The single-member routes live here, one per model of the catalog; the same models under the
json-batch, MLflow and KServe v2 protocols come from the routers of
:mod:`~offerflow.serving.batch`, :mod:`~offerflow.serving.mlflow` and
:mod:`~offerflow.serving.kserve`. Every route validates its body with pydantic models, answers
with orjson, and is documented at ``/openapi.json``. A body of more than 8 MiB is answered 413
(:mod:`~offerflow.serving.limits`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from offerflow import __version__
from offerflow.serving import batch, kserve, mlflow
from offerflow.serving.catalog import UNDEFINED, Member, ServedModel, defined
from offerflow.serving.limits import MAX_BODY_BYTES, BodyLimit
from offerflow.serving.prediction import (
    Features,
    OfferResponse,
    PingResponse,
    Prediction,
    PredictionResponse,
)
from offerflow.serving.routes import JSONResponse, invalid, serve_each_model

__all__ = ["app"]

app = FastAPI(
    title="offerflow bundled model endpoints",
    version=__version__,
    description=(
        "The partner's ATS and RESP models and its offer rule, one member per "
        "call, and the same models under the json-batch, MLflow scoring-server and KServe v2 "
        "protocols."
    ),
)


# A body past the limit is refused before it is read whole (serving/limits.py says why 8 MiB).
app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


@app.exception_handler(RequestValidationError)
async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
    """Answer 422 with the validation errors, as FastAPI does, but also for NaN inputs."""
    # FastAPI's own handler echoes the input with json.dumps, which refuses a NaN the body
    # carried and turns the 422 into a 500; orjson writes it as null.
    return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def _model_answer(model: ServedModel[Member], member: Member) -> Response:
    """Answer a model call, or refuse a member whose answer is not a finite number."""
    value = model.answer(member)
    if not defined(value):
        raise invalid((), UNDEFINED, member)
    return JSONResponse({model.output: value})


@app.get("/", response_model=PingResponse, summary="Health check")
async def ping() -> Response:
    """Answer that the service is up."""
    return JSONResponse({"msg": "pong"})


serve_each_model(
    app.router,
    path=lambda model: model.json_path,
    bodies={Features: Features, Prediction: Prediction},
    responses={"prediction": PredictionResponse, "offer": OfferResponse},
    answer=_model_answer,
    summary="{model}",
    who="a member",
    whose="a member's",
)

# After the single-member routes: a request is matched against the routes in order, and the
# single-member ones carry most of the traffic.
app.include_router(batch.router)
app.include_router(mlflow.router)
app.include_router(kserve.router)
