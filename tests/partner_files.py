"""Partner config files for tests: the default partner, pointed at given data and servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from offerflow.config import DEFAULT_CONFIG, ProtocolName


def default_document(base_url: str | None = None, input_path: Path | None = None) -> dict[str, Any]:
    """The default partner's config as a dict, optionally with real URLs and another input."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if base_url is not None:
        for endpoint in [*document["models"], document["offer"]]:
            endpoint["url"] = endpoint["url"].replace("bundled:", base_url.rstrip("/"))
    document["input"]["path"] = str(input_path or DEFAULT_CONFIG.parent / "default_members.csv")
    return document


def write_partner(path: Path, document: dict[str, Any]) -> Path:
    """Write a config document as YAML; returns its path."""
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


#: the bundled routes of each endpoint of the default partner, per protocol
ROUTES: dict[ProtocolName, dict[str, str]] = {
    "json": {"ats": "/ml/ats/predict", "resp": "/ml/resp/predict", "offer": "/offer/assign"},
    "json-batch": {
        "ats": "/ml/ats/predict/batch",
        "resp": "/ml/resp/predict/batch",
        "offer": "/offer/assign/batch",
    },
    "mlflow": {
        "ats": "/mlflow/ats/invocations",
        "resp": "/mlflow/resp/invocations",
        "offer": "/mlflow/offer/invocations",
    },
    "kserve-v2": {
        "ats": "/v2/models/ats/infer",
        "resp": "/v2/models/resp/infer",
        "offer": "/v2/models/offer/infer",
    },
}
