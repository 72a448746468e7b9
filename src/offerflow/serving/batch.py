"""The models in batches: ``{"instances": [...]}`` in, one answer per instance out, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from offerflow.serving.catalog import (
    MAX_BATCH,
    UNDEFINED,
    Answer,
    ServedModel,
    first_undefined,
)
from offerflow.serving.prediction import Features, Offer, Prediction
from offerflow.serving.routes import JSONResponse, invalid, serve_each_model

__all__ = ["FeaturesBatch", "OffersResponse", "PredictionBatch", "PredictionsResponse", "router"]

router = APIRouter(tags=["json-batch"])

_INSTANCES = f"the members, at most {MAX_BATCH}; the answers come in the same order"


class FeaturesBatch(BaseModel):
    """The features of several members, the body of a model's batch endpoint."""

    model_config = ConfigDict(frozen=True)

    instances: list[Features] = Field(max_length=MAX_BATCH, description=_INSTANCES)


class PredictionBatch(BaseModel):
    """The predictions of several members, the body of the offer's batch endpoint."""

    model_config = ConfigDict(frozen=True)

    instances: list[Prediction] = Field(max_length=MAX_BATCH, description=_INSTANCES)


class PredictionsResponse(BaseModel):
    """The answer of a model's batch endpoint: one prediction per instance, in order."""

    predictions: list[float]


class OffersResponse(BaseModel):
    """The answer of the offer's batch endpoint: one offer per instance, in order."""

    offers: list[Offer]


_FIELDS = {"prediction": "predictions", "offer": "offers"}


def _answer_batch(model: ServedModel[Any], batch: FeaturesBatch | PredictionBatch) -> Response:
    """Answer every instance, or refuse the batch naming the first one without a finite answer."""
    instances: Sequence[Any] = batch.instances
    answers: list[Answer] = [model.answer(instance) for instance in instances]
    index = first_undefined(answers)
    if index is not None:
        raise invalid(("instances", index), UNDEFINED, instances[index])
    return JSONResponse({_FIELDS[model.output]: answers})


serve_each_model(
    router,
    path=lambda model: model.batch_path,
    bodies={Features: FeaturesBatch, Prediction: PredictionBatch},
    responses={"prediction": PredictionsResponse, "offer": OffersResponse},
    answer=_answer_batch,
    summary="{model}, batch",
    who="each member",
    whose="each member's",
)
