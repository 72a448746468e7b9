"""Partner configs: pydantic models and the one loader of YAML files and the environment."""

from __future__ import annotations

from offerflow.config.loader import DEFAULT_CONFIG, load_config
from offerflow.config.models import (
    BUNDLED_SCHEME,
    DEFAULT_COLUMNS,
    DEFAULT_FEATURES,
    BreakerConfig,
    EndpointConfig,
    InputConfig,
    ModelConfig,
    OfferConfig,
    OutputConfig,
    PartnerConfig,
    RetryBudgetConfig,
)

__all__ = [
    "BUNDLED_SCHEME",
    "DEFAULT_COLUMNS",
    "DEFAULT_CONFIG",
    "DEFAULT_FEATURES",
    "BreakerConfig",
    "EndpointConfig",
    "InputConfig",
    "ModelConfig",
    "OfferConfig",
    "OutputConfig",
    "PartnerConfig",
    "RetryBudgetConfig",
    "load_config",
]
