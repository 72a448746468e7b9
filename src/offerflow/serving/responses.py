"""How the routes answer: JSON rendered by orjson, and 422 errors in FastAPI's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

__all__ = ["JSONResponse", "invalid"]


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
