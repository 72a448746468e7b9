"""The offer workflow: readers, features, the model client, sinks, and the DAG that joins them."""

from __future__ import annotations

from offerflow.pipeline.client import CallResult, Endpoint, ModelClient
from offerflow.pipeline.features import (
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    FeatureContext,
    FeatureRegistry,
    compute_features,
)
from offerflow.pipeline.generator import generate_transactions, write_transactions
from offerflow.pipeline.manifest import RunManifest, read_manifest, write_manifest
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.reader import ReadResult, parse_as_of, read_transactions
from offerflow.pipeline.report import ConsoleReport
from offerflow.pipeline.run import RunReport, Shutdown, new_run_dir, run_pipeline
from offerflow.pipeline.sinks import ChunkedTable, RequestLog, atomic_write, write_json
from offerflow.pipeline.workflow import Recorder, build_workflow, check_config, offers_schema

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "CallResult",
    "ChunkedTable",
    "ConsoleReport",
    "Endpoint",
    "FeatureContext",
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
    "compute_features",
    "generate_transactions",
    "new_run_dir",
    "offers_schema",
    "parse_as_of",
    "read_manifest",
    "read_transactions",
    "run_pipeline",
    "write_json",
    "write_manifest",
    "write_transactions",
]
