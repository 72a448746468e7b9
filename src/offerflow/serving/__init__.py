"""The bundled model endpoints: the partner's ATS and RESP models and its offer rule.

``offerflow.serving.app:app`` is the FastAPI app; :func:`serve` runs it with uvicorn and
:class:`BundledServer` runs that in a child process (a :class:`ChildServer`, which runs any
server that announces its URL). Importing this package stays light:
FastAPI is imported by ``app`` only, uvicorn on first use of :func:`serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offerflow.serving.prediction import (
    Features,
    Prediction,
    assign_offer,
    predict_ats,
    predict_resp,
)
from offerflow.serving.process import BundledServer, ChildServer

if TYPE_CHECKING:
    from offerflow.serving.server import serve

__all__ = [
    "BundledServer",
    "ChildServer",
    "Features",
    "Prediction",
    "assign_offer",
    "predict_ats",
    "predict_resp",
    "serve",
]


def __getattr__(name: str) -> Any:
    """Import ``serve`` (and with it uvicorn) on first use."""
    if name == "serve":
        from offerflow.serving.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
