"""The model routes of a protocol, generated from the catalog, and how every route answers.

One POST route per served model and protocol; answers are JSON rendered by orjson, and
errors 422s in FastAPI's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import Response

from offerflow.serving.catalog import MODELS, ServedModel

__all__ = ["JSONResponse", "invalid", "serve_each_model"]


def serve_each_model(
    router: APIRouter,
    *,
    path: Callable[[ServedModel[Any]], str],
    bodies: Mapping[type[BaseModel], type[BaseModel]],
    responses: Mapping[str, type[BaseModel]],
    answer: Callable[[ServedModel[Any], Any], Response],
    summary: str,
    who: str,
    whose: str,
) -> None:
    """Serve every model of the catalog on the router, in the catalog's order, as a protocol does.

    A model's route is ``POST path(model)``; it takes the body ``bodies[model.inputs]``, validated,
    and answers ``answer(model, body)``, documented as ``responses[model.output]``. The OpenAPI
    summary is ``summary`` with the model's as ``{model}``; the description is the model's, with
    ``who`` and ``whose`` naming the member(s) a call carries.
    """
    for model in MODELS.values():
        _add_route(
            router,
            model,
            path(model),
            bodies[model.inputs],
            answer,
            response_model=responses[model.output],
            summary=summary.format(model=model.summary),
            description=model.description.format(who=who, whose=whose),
        )


def _add_route(
    router: APIRouter,
    model: ServedModel[Any],
    path: str,
    body: type[BaseModel],
    answer: Callable[[ServedModel[Any], Any], Response],
    *,
    response_model: type[BaseModel],
    summary: str,
    description: str,
) -> None:
    """Serve ``POST path``: a body validated as ``body``, answered by ``answer(model, body)``."""

    async def route(validated: Any) -> Response:
        return answer(model, validated)

    # FastAPI validates the body as its parameter's annotation says, and this one is known only
    # now: a type, where `from __future__ import annotations` left a string.
    route.__annotations__ = {"validated": body, "return": Response}
    router.add_api_route(
        path,
        route,
        methods=["POST"],
        response_model=response_model,
        summary=summary,
        description=description,
        name=_name(model, path),
    )


def _name(model: ServedModel[Any], path: str) -> str:
    """Name a route by its path from the model's name on: ``/ml/ats/predict`` is ats_predict."""
    # The operationIds of /openapi.json start with the name: these are the ones the routes had
    # as hand-written functions, which generated clients may know them by.
    segments = path.strip("/").split("/")
    return "_".join(segments[segments.index(model.name) :])


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize the content to JSON bytes."""
        return orjson.dumps(content)


def invalid(
    loc: Sequence[str | int], message: str, given: Any, kind: str = "value_error"
) -> RequestValidationError:
    """Return the 422 error for a body that is well-formed but cannot be answered."""
    error = {"type": kind, "loc": ("body", *loc), "msg": message, "input": given}
    return RequestValidationError([error])
