"""offerflow: a typed DAG workflow manager for ML offer pipelines, and the offer pipeline on it.

``offerflow.open_run(path)`` opens a run's tables as polars LazyFrames, whatever ran it (see
``offerflow.pipeline.open_run``). Importing this package stays light: the pipeline (polars and
the rest) is imported on first use of ``open_run``, and nothing here imports it before.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["__version__", "open_run"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import ``open_run`` (and with it the pipeline) on first use."""
    if name == "open_run":
        return importlib.import_module("offerflow.pipeline").open_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
