"""The client side of the protocol tests: hand-built members, hypothesis strategies, HTTP calls.

Every protocol must answer a member exactly as the single-member routes do, so the tests ask
those routes (over HTTP, or in-process for hypothesis) for the expected answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from hypothesis import strategies as st
from starlette.responses import Response

from offerflow.serving import batch, mlflow
from offerflow.serving.app import app
from offerflow.serving.catalog import MODELS
from tests.samples import PLAIN_FEATURES

__all__ = [
    "FEATURES",
    "MODEL_ROUTES",
    "PREDICTIONS",
    "SINGLE_ROUTES",
    "RouteFunction",
    "answer_in_process",
    "features",
    "get",
    "members",
    "post",
    "predictions",
    "route_function",
    "single_answers",
    "single_answers_in_process",
]

#: members whose features give distinct, partly awkward floats (none is refused)
FEATURES: list[dict[str, float]] = [
    PLAIN_FEATURES,
    # RESP below its cap: 0.4
    PLAIN_FEATURES
    | {
        "PCT_BUY_TRANSACTIONS": 1.0,
        "PCT_GIFT_TRANSACTIONS": 0.0,
        "PCT_REDEEM_TRANSACTIONS": 0.0,
        "AVG_REVENUE_USD": 1.0,
        "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 1.0,
        "DAYS_SINCE_LAST_TRANSACTION": 9.0,
    },
    # ATS weight clamped to 0
    PLAIN_FEATURES
    | {"PCT_BUY_TRANSACTIONS": 0.0, "PCT_GIFT_TRANSACTIONS": 0.0, "PCT_REDEEM_TRANSACTIONS": 1.0},
    # floats whose results depend on the order of operations
    {
        "AVG_POINTS_BOUGHT": 0.1,
        "AVG_REVENUE_USD": 0.1,
        "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 0.7,
        "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 0.3,
        "PCT_BUY_TRANSACTIONS": 0.1,
        "PCT_GIFT_TRANSACTIONS": 0.7,
        "PCT_REDEEM_TRANSACTIONS": 0.3,
        "DAYS_SINCE_LAST_TRANSACTION": 0.1,
    },
    # a negative volume, made positive; RESP long ago
    PLAIN_FEATURES
    | {
        "AVG_POINTS_BOUGHT": -50.0,
        "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": -100.0,
        "PCT_REDEEM_TRANSACTIONS": 1.0,
        "AVG_REVENUE_USD": 0.0,
        "DAYS_SINCE_LAST_TRANSACTION": 999.0,
    },
]

#: members' predictions around the offer threshold
PREDICTIONS: list[dict[str, float]] = [
    {"ats_prediction": 400.0, "resp_prediction": 0.5},
    {"ats_prediction": 399.0, "resp_prediction": 0.5},
    {"ats_prediction": 85.0, "resp_prediction": 0.9},
    {"ats_prediction": -400.0, "resp_prediction": -0.5},
    {"ats_prediction": 0.0, "resp_prediction": 0.0},
]

#: the single-member route of each model, and the field of its answer
SINGLE_ROUTES: dict[str, tuple[str, str]] = {
    "ats": ("/ml/ats/predict", "prediction"),
    "resp": ("/ml/resp/predict", "prediction"),
    "offer": ("/offer/assign", "offer"),
}
#: the models that take features
MODEL_ROUTES = ["ats", "resp"]


def members(model: str) -> list[dict[str, float]]:
    """Return the hand-built members a model takes."""
    return PREDICTIONS if model == "offer" else FEATURES


async def post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    """POST a JSON body; return the status and the decoded answer."""
    async with http.post(path, json=body) as response:
        return response.status, orjson.loads(await response.read())


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    """GET a path; return the status and the decoded answer."""
    async with http.get(path) as response:
        return response.status, orjson.loads(await response.read())


async def single_answers(
    http: aiohttp.ClientSession, model: str, bodies: Sequence[dict[str, Any]]
) -> list[Any]:
    """Ask the single-member route of a model for each member's answer, over HTTP."""
    path, field = SINGLE_ROUTES[model]
    answers = []
    for body in bodies:
        status, answer = await post(http, path, body)
        assert status == 200, answer
        answers.append(answer[field])
    return answers


# --- in-process, for hypothesis ---------------------------------------------------------------

#: a route's function: the validated body in, the response out
RouteFunction = Callable[[Any], Awaitable[Response]]


def route_function(path: str) -> RouteFunction:
    """Return the function the app answers ``POST path`` with (json, json-batch or MLflow)."""
    routes = [*app.router.routes, *batch.router.routes, *mlflow.router.routes]
    [route] = [r for r in routes if isinstance(r, APIRoute) and r.path == path]
    function: RouteFunction = route.endpoint
    return function


async def answer_in_process(call: Awaitable[Response]) -> Any | None:
    """Await a route function; return its decoded answer, or None when it refuses the body."""
    try:
        response = await call
    except (RequestValidationError, HTTPException):
        return None
    assert response.status_code == 200
    return orjson.loads(bytes(response.body))


async def single_answers_in_process(
    model: str, bodies: Sequence[dict[str, Any]]
) -> list[Any] | None:
    """Return each member's answer from the single-member route function; None if one is refused."""
    path, field = SINGLE_ROUTES[model]
    route, inputs = route_function(path), MODELS[model].inputs
    answers = []
    for body in bodies:
        answer = await answer_in_process(route(inputs.model_validate(body)))
        if answer is None:
            return None
        answers.append(answer[field])
    return answers


# Finite floats of every size (some overflow a formula, which every route must refuse alike),
# small ones that keep the formulas finite, and the values where they turn.
_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e4, max_value=1e4),
    st.sampled_from([-1.0, 0.0, 0.5, 1.0, 200.0]),
)


def features() -> st.SearchStrategy[dict[str, float]]:
    """Features of a member: any finite floats."""
    return st.fixed_dictionaries({name: _VALUES for name in PLAIN_FEATURES})


def predictions() -> st.SearchStrategy[dict[str, float]]:
    """Predictions of a member: any finite floats."""
    return st.fixed_dictionaries({"ats_prediction": _VALUES, "resp_prediction": _VALUES})
