"""The models as MLflow scoring servers: ``POST /mlflow/{ats,resp,offer}/invocations``.

A body holds a table, either as ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``
(pandas' ``split`` orientation) or as ``{"dataframe_records": [{...}, ...]}``; the answer is
``{"predictions": [...]}``, one per row, in order. As in MLflow, the columns may come in any
order and columns the model does not use are ignored.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Generic

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.responses import Response

from offerflow.serving.catalog import (
    MAX_BATCH,
    UNDEFINED,
    Answer,
    Member,
    ServedModel,
    first_undefined,
)
from offerflow.serving.prediction import Features, Offer, Prediction
from offerflow.serving.routes import JSONResponse, invalid, serve_each_model

__all__ = [
    "Cell",
    "DataframeSplit",
    "MlflowFeaturesInput",
    "MlflowOffers",
    "MlflowPredictionInput",
    "MlflowPredictions",
    "router",
]

router = APIRouter(tags=["mlflow"])

#: a cell of a table: columns the model ignores may hold any JSON scalar
Cell = float | int | str | bool | None

_ROWS = f"at most {MAX_BATCH} rows; the predictions come in the same order"


class DataframeSplit(BaseModel):
    """A table in pandas' ``split`` orientation: column names, and rows of cells in that order."""

    model_config = ConfigDict(frozen=True)

    columns: list[str] = Field(description="every input field of the model, in any order")
    data: list[list[Cell]] = Field(max_length=MAX_BATCH, description=_ROWS)
    index: list[Cell] | None = Field(default=None, description="row labels, ignored")


class _MlflowInput(BaseModel, Generic[Member]):
    """The body of an MLflow invocation: one table, split or as records."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["dataframe_split"]}, {"required": ["dataframe_records"]}]
        },
    )

    dataframe_split: DataframeSplit | None = None
    dataframe_records: Annotated[list[Member], Field(max_length=MAX_BATCH)] | None = Field(
        default=None, description=_ROWS
    )
    params: dict[str, Any] | None = Field(
        default=None, description="inference parameters, ignored: the models take none"
    )

    @model_validator(mode="after")
    def _one_table(self) -> _MlflowInput[Member]:
        """Check that the body holds exactly one table."""
        if (self.dataframe_split is None) == (self.dataframe_records is None):
            raise ValueError("give exactly one of dataframe_split and dataframe_records")
        return self


class MlflowFeaturesInput(_MlflowInput[Features]):
    """The features of members as a table, the body of the ATS and RESP invocations."""


class MlflowPredictionInput(_MlflowInput[Prediction]):
    """The predictions of members as a table, the body of the offer invocations."""


class MlflowPredictions(BaseModel):
    """The answer of a model invocation: one prediction per row, in order."""

    predictions: list[float]


class MlflowOffers(BaseModel):
    """The answer of an offer invocation: one offer per row, in order."""

    predictions: list[Offer]


def _split_members(model: ServedModel[Member], split: DataframeSplit) -> list[Member]:
    """Return the members the rows of a split table describe, or raise the 422 naming the faults."""
    duplicates = sorted(name for name, count in Counter(split.columns).items() if count > 1)
    if duplicates:
        message = f"duplicate columns: {', '.join(duplicates)}"
        raise invalid(("dataframe_split", "columns"), message, split.columns)
    missing = [name for name in model.fields if name not in split.columns]
    if missing:
        message = f"missing columns: {', '.join(missing)}"
        raise invalid(("dataframe_split", "columns"), message, split.columns, "missing")
    position = {name: split.columns.index(name) for name in model.fields}
    members: list[Member] = []
    errors: list[dict[str, Any]] = []
    for row_index, row in enumerate(split.data):
        loc: tuple[str | int, ...] = ("body", "dataframe_split", "data", row_index)
        if len(row) != len(split.columns):
            message = f"the row has {len(row)} values for {len(split.columns)} columns"
            errors.append({"type": "value_error", "loc": loc, "msg": message, "input": row})
            continue
        try:
            members.append(model.inputs.model_validate({k: row[i] for k, i in position.items()}))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                name = str(error["loc"][0])
                errors.append(
                    {
                        "type": error["type"],
                        "loc": (*loc, position[name]),
                        "msg": f"column {name}: {error['msg']}",
                        "input": error["input"],
                    }
                )
    if errors:
        raise RequestValidationError(errors)
    return members


def _predictions(model: ServedModel[Member], table: _MlflowInput[Member]) -> Response:
    """Answer every row of a table, or refuse it naming the first row without a finite answer."""
    rows: tuple[str, ...]
    if table.dataframe_split is not None:
        members, rows = _split_members(model, table.dataframe_split), ("dataframe_split", "data")
    else:
        # _one_table has made sure the records are there
        members, rows = table.dataframe_records or [], ("dataframe_records",)
    answers: list[Answer] = [model.answer(member) for member in members]
    index = first_undefined(answers)
    if index is not None:
        raise invalid((*rows, index), UNDEFINED, members[index])
    return JSONResponse({"predictions": answers})


serve_each_model(
    router,
    path=lambda model: model.mlflow_path,
    bodies={Features: MlflowFeaturesInput, Prediction: MlflowPredictionInput},
    responses={"prediction": MlflowPredictions, "offer": MlflowOffers},
    answer=_predictions,
    summary="{model}, MLflow",
    who="each member (row)",
    whose="each member's (row's)",
)
