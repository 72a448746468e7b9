"""The offer workflow: readers, features, the model client, sinks, and the DAG that joins them."""

from __future__ import annotations

from offerflow.pipeline.client import CallResult, Endpoint, ModelClient
from offerflow.pipeline.contract import ContractReport, check_contracts
from offerflow.pipeline.feature_modules import load_feature_module, registry_with
from offerflow.pipeline.features import (
    CANONICAL_SCHEMA,
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    FeatureContext,
    FeatureFamily,
    FeatureRegistry,
    compute_features,
)
from offerflow.pipeline.generator import generate_transactions, write_transactions
from offerflow.pipeline.manifest import RunManifest, read_manifest, write_manifest
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.protocols import Codec
from offerflow.pipeline.reader import ReadResult, parse_as_of, read_transactions
from offerflow.pipeline.report import ConsoleReport
from offerflow.pipeline.run import RunReport, Shutdown, new_run_dir, run_pipeline
from offerflow.pipeline.sinks import ChunkedTable, RequestLog, atomic_write, write_json
from offerflow.pipeline.workflow import (
    Recorder,
    build_workflow,
    check_config,
    client_for,
    feature_registry,
    offers_schema,
)

__all__ = [
    "CANONICAL_SCHEMA",
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "CallResult",
    "ChunkedTable",
    "Codec",
    "ConsoleReport",
    "ContractReport",
    "Endpoint",
    "FeatureContext",
    "FeatureFamily",
    "FeatureRegistry",
    "Member",
    "MemberRows",
    "ModelClient",
    "ReadResult",
    "Recorder",
    "RequestLog",
    "RunManifest",
    "RunReport",
    "Shutdown",
    "Status",
    "atomic_write",
    "build_workflow",
    "check_config",
    "check_contracts",
    "client_for",
    "compute_features",
    "feature_registry",
    "generate_transactions",
    "load_feature_module",
    "new_run_dir",
    "offers_schema",
    "parse_as_of",
    "read_manifest",
    "read_transactions",
    "registry_with",
    "run_pipeline",
    "write_json",
    "write_manifest",
    "write_transactions",
]
