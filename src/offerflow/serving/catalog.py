"""The served models by name: what each takes and answers, the function behind it, and where.

Every protocol of the app answers through these, so that a member gets the same float from
each of them; the protocols' routes are generated from them, at the paths this table names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from offerflow.serving.prediction import (
    Features,
    Offer,
    Prediction,
    assign_offer,
    predict_ats,
    predict_resp,
)

__all__ = [
    "ATS",
    "MAX_BATCH",
    "MODELS",
    "OFFER",
    "RESP",
    "UNDEFINED",
    "Answer",
    "Member",
    "ServedModel",
    "defined",
    "first_undefined",
]

#: the most members one call of a batch protocol may carry
MAX_BATCH = 10_000

#: the error message for members whose prediction is not a finite number
UNDEFINED = "the prediction is not finite for these features"

Answer = float | Offer
#: the input body of a model
Member = TypeVar("Member", Features, Prediction)


@dataclass(frozen=True, slots=True)
class ServedModel(Generic[Member]):
    """One model as the protocols serve it: what it takes and answers, and where it is served."""

    name: Literal["ats", "resp", "offer"]
    inputs: type[Member]
    output: Literal["prediction", "offer"]
    answer: Callable[[Member], Answer]
    """The model's answer for one member: nan where the formula is undefined."""
    summary: str
    """What the OpenAPI document calls the model's routes, before the protocol's name."""
    description: str
    """What a route does, with ``{who}`` and ``{whose}`` for the member(s) a protocol answers."""
    json_path: str
    """The route of one member per call (the ``json`` protocol)."""
    batch_path: str
    """The route of ``{"instances": [...]}`` (the ``json-batch`` protocol)."""
    mlflow_path: str
    """The route of a table (the ``mlflow`` protocol, as MLflow's scoring server)."""

    @property
    def kserve_path(self) -> str:
        """The inference route under the ``kserve-v2`` protocol, whose paths name the model."""
        return f"/v2/models/{self.name}/infer"

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the input fields, in the order of the body's schema."""
        return tuple(self.inputs.model_fields)


def _resp(features: Features) -> float:
    """Return the RESP prediction, nan where the formula is undefined."""
    try:
        return predict_resp(features)
    except ZeroDivisionError:
        return math.nan


ATS = ServedModel(
    "ats",
    Features,
    "prediction",
    predict_ats,
    summary="ATS model",
    description="Predict the average transaction size of {who}.",
    json_path="/ml/ats/predict",
    batch_path="/ml/ats/predict/batch",
    mlflow_path="/mlflow/ats/invocations",
)
RESP = ServedModel(
    "resp",
    Features,
    "prediction",
    _resp,
    summary="RESP model",
    description="Predict the probability that {who} responds to an offer.",
    json_path="/ml/resp/predict",
    batch_path="/ml/resp/predict/batch",
    mlflow_path="/mlflow/resp/invocations",
)
OFFER = ServedModel(
    "offer",
    Prediction,
    "offer",
    assign_offer,
    summary="Offer rule",
    description="Assign an offer to {whose} predictions.",
    json_path="/offer/assign",
    batch_path="/offer/assign/batch",
    mlflow_path="/mlflow/offer/invocations",
)

#: the served models by name
MODELS: Mapping[str, ServedModel[Any]] = {model.name: model for model in (ATS, RESP, OFFER)}


def defined(answer: Answer) -> bool:
    """Whether JSON can carry an answer as what it is: an offer, or a finite number."""
    # orjson would write inf or nan as null, breaking the promise of a float.
    return isinstance(answer, str) or math.isfinite(answer)


def first_undefined(answers: Iterable[Answer]) -> int | None:
    """Return the index of the first answer that is not defined(), or None."""
    return next((index for index, answer in enumerate(answers) if not defined(answer)), None)
