"""Per-member features: a registry of named polars expressions over the canonical table.

- :mod:`~offerflow.pipeline.features.registry`: features and families of features by name;
- :mod:`~offerflow.pipeline.features.builtin`: the built-in ones (:data:`DEFAULT_REGISTRY`);
- :mod:`~offerflow.pipeline.features.compute`: all of a run's features in one lazy group-by;
- :mod:`~offerflow.pipeline.features.modules`: a partner's own, from a Python file.
"""

from __future__ import annotations

from offerflow.config import DEFAULT_FEATURES
from offerflow.pipeline.features.builtin import DEFAULT_REGISTRY
from offerflow.pipeline.features.compute import CANONICAL_SCHEMA, PART_ROWS, compute_features
from offerflow.pipeline.features.modules import load_feature_module, registry_with
from offerflow.pipeline.features.registry import (
    FeatureContext,
    FeatureFamily,
    FeatureFn,
    FeatureRegistry,
)

__all__ = [
    "CANONICAL_SCHEMA",
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "PART_ROWS",
    "FeatureContext",
    "FeatureFamily",
    "FeatureFn",
    "FeatureRegistry",
    "compute_features",
    "load_feature_module",
    "registry_with",
]
