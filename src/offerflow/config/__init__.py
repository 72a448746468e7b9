"""Partner configs: pydantic models and the one loader of YAML files and the environment."""

from __future__ import annotations

from offerflow.config.endpoints import (
    BUNDLED_SCHEME,
    MEMBER_ID,
    NO_PROXY,
    PROTOCOLS,
    BreakerConfig,
    EndpointConfig,
    ModelConfig,
    OfferConfig,
    ProtocolName,
    RetryBudgetConfig,
    template_leaves,
)
from offerflow.config.inputs import DEFAULT_COLUMNS, CsvFormat, InputConfig
from offerflow.config.loader import DEFAULT_CONFIG, config_from_document, load_config
from offerflow.config.models import DEFAULT_FEATURES, DriftConfig, OutputConfig, PartnerConfig
from offerflow.config.proxies import EnvironmentProxies

__all__ = [
    "BUNDLED_SCHEME",
    "DEFAULT_COLUMNS",
    "DEFAULT_CONFIG",
    "DEFAULT_FEATURES",
    "MEMBER_ID",
    "NO_PROXY",
    "PROTOCOLS",
    "BreakerConfig",
    "CsvFormat",
    "DriftConfig",
    "EndpointConfig",
    "EnvironmentProxies",
    "InputConfig",
    "ModelConfig",
    "OfferConfig",
    "OutputConfig",
    "PartnerConfig",
    "ProtocolName",
    "RetryBudgetConfig",
    "config_from_document",
    "load_config",
    "template_leaves",
]
