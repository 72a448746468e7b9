"""The offer workflow: readers, features, the model client, sinks, and the DAG that joins them."""

from __future__ import annotations

from offerflow.pipeline.client import CallResult, Endpoint, ModelClient, is_retryable
from offerflow.pipeline.features import (
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    FeatureContext,
    FeatureRegistry,
    compute_features,
)
from offerflow.pipeline.generator import generate_transactions, write_transactions
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.reader import ReadResult, parse_as_of, read_transactions
from offerflow.pipeline.report import ConsoleReport
from offerflow.pipeline.run import RunReport, new_run_dir, run_pipeline
from offerflow.pipeline.sinks import ChunkedTable, RequestLog, atomic_write, write_json
from offerflow.pipeline.workflow import Tally, build_workflow, check_config, offers_schema

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
    "RequestLog",
    "RunReport",
    "Status",
    "Tally",
    "atomic_write",
    "build_workflow",
    "check_config",
    "compute_features",
    "generate_transactions",
    "is_retryable",
    "new_run_dir",
    "offers_schema",
    "parse_as_of",
    "read_transactions",
    "run_pipeline",
    "write_json",
    "write_transactions",
]
