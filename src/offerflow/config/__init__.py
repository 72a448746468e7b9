"""Partner configs: pydantic models and the one loader of YAML files and the environment."""

from __future__ import annotations

from offerflow.config.endpoints import (
    BUNDLED_SCHEME,
    MEMBER_ID,
    PROTOCOLS,
    BreakerConfig,
    EndpointConfig,
    ModelConfig,
    OfferConfig,
    ProtocolName,
    RetryBudgetConfig,
    template_leaves,
)
from offerflow.config.loader import DEFAULT_CONFIG, load_config
from offerflow.config.models import (
    DEFAULT_COLUMNS,
    DEFAULT_FEATURES,
    DriftConfig,
    InputConfig,
    OutputConfig,
    PartnerConfig,
)

__all__ = [
    "BUNDLED_SCHEME",
    "DEFAULT_COLUMNS",
    "DEFAULT_CONFIG",
    "DEFAULT_FEATURES",
    "MEMBER_ID",
    "PROTOCOLS",
    "BreakerConfig",
    "DriftConfig",
    "EndpointConfig",
    "InputConfig",
    "ModelConfig",
    "OfferConfig",
    "OutputConfig",
    "PartnerConfig",
    "ProtocolName",
    "RetryBudgetConfig",
    "load_config",
    "template_leaves",
]
