"""offerflow: a typed DAG workflow manager for ML offer pipelines, and the offer pipeline on it."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
