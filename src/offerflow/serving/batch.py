"""The models in batches: ``{"instances": [...]}`` in, one answer per instance out, in order."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from offerflow.serving.catalog import (
    ATS,
    MAX_BATCH,
    OFFER,
    RESP,
    UNDEFINED,
    Answer,
    Member,
    ServedModel,
    first_undefined,
)
from offerflow.serving.prediction import Features, Offer, Prediction
from offerflow.serving.responses import JSONResponse, invalid

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


def _answers(model: ServedModel[Member], instances: Sequence[Member]) -> list[Answer]:
    """Answer every instance, or refuse the batch naming the first one without a finite answer."""
    answers = [model.answer(instance) for instance in instances]
    index = first_undefined(answers)
    if index is not None:
        raise invalid(("instances", index), UNDEFINED, instances[index])
    return answers


@router.post(
    "/ml/ats/predict/batch", response_model=PredictionsResponse, summary="ATS model, batch"
)
async def ats_predict_batch(batch: FeaturesBatch) -> Response:
    """Predict the average transaction size of each member."""
    return JSONResponse({"predictions": _answers(ATS, batch.instances)})


@router.post(
    "/ml/resp/predict/batch", response_model=PredictionsResponse, summary="RESP model, batch"
)
async def resp_predict_batch(batch: FeaturesBatch) -> Response:
    """Predict the probability that each member responds to an offer."""
    return JSONResponse({"predictions": _answers(RESP, batch.instances)})


@router.post("/offer/assign/batch", response_model=OffersResponse, summary="Offer rule, batch")
async def offer_assign_batch(batch: PredictionBatch) -> Response:
    """Assign an offer to each member's predictions."""
    return JSONResponse({"offers": _answers(OFFER, batch.instances)})
