"""offerflow: a typed DAG workflow manager for ML offer pipelines, and the offer pipeline on it.

``offerflow.open_run(path)`` opens a run's tables as polars LazyFrames, whatever ran it.
Importing this package stays light: the pipeline (polars and the rest) is imported on first
use of ``open_run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offerflow.pipeline import open_run

__all__ = ["__version__", "open_run"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import ``open_run`` (and with it the pipeline) on first use."""
    if name == "open_run":
        from offerflow.pipeline import open_run

        return open_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
