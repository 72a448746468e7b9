"""The offer pipeline, grouped by its flow: inputs → features → endpoints → outputs.

- :mod:`~offerflow.pipeline.inputs`: the partner's file read into usable rows and rejects;
- :mod:`~offerflow.pipeline.features`: per-member features from a registry of expressions;
- :mod:`~offerflow.pipeline.endpoints`: the model and offer calls (transport, client, codecs);
- :mod:`~offerflow.pipeline.outputs`: result tables, the run manifest, the console report;

and, joining them, :mod:`~offerflow.pipeline.members` (a member on its way through),
:mod:`~offerflow.pipeline.workflow` (the DAG built from a partner config) and
:mod:`~offerflow.pipeline.run` (one run: its directory, files, summary, stop and resume).
"""

from __future__ import annotations

from offerflow.pipeline.endpoints import (
    CallResult,
    Codec,
    ContractReport,
    Endpoint,
    ModelClient,
    check_contracts,
)
from offerflow.pipeline.features import (
    CANONICAL_SCHEMA,
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    FeatureContext,
    FeatureFamily,
    FeatureRegistry,
    compute_features,
    load_feature_module,
    registry_with,
)
from offerflow.pipeline.inputs import (
    ReadResult,
    generate_transactions,
    parse_as_of,
    read_transactions,
    write_transactions,
)
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.outputs import (
    ChunkedTable,
    Comparison,
    ConsoleReport,
    PastRun,
    RequestLog,
    RunManifest,
    atomic_write,
    check_run_id,
    compare_runs,
    list_runs,
    new_run_dir,
    open_run,
    read_manifest,
    read_run,
    run_log,
    runs_table,
    runs_text,
    write_json,
    write_manifest,
    write_report,
)
from offerflow.pipeline.partition import PartitionOutcome, Progress, run_partition
from offerflow.pipeline.run import (
    RunReport,
    finish_run,
    record_failure,
    run_pipeline,
    run_until_done,
    with_concurrency,
)
from offerflow.pipeline.stopping import Shutdown
from offerflow.pipeline.workflow import (
    Recorder,
    build_workflow,
    check_config,
    check_input,
    client_for,
    feature_registry,
    offers_schema,
    read_input,
)

__all__ = [
    "CANONICAL_SCHEMA",
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "CallResult",
    "ChunkedTable",
    "Codec",
    "Comparison",
    "ConsoleReport",
    "ContractReport",
    "Endpoint",
    "FeatureContext",
    "FeatureFamily",
    "FeatureRegistry",
    "Member",
    "MemberRows",
    "ModelClient",
    "PartitionOutcome",
    "PastRun",
    "Progress",
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
    "check_input",
    "check_run_id",
    "client_for",
    "compare_runs",
    "compute_features",
    "feature_registry",
    "finish_run",
    "generate_transactions",
    "list_runs",
    "load_feature_module",
    "new_run_dir",
    "offers_schema",
    "open_run",
    "parse_as_of",
    "read_input",
    "read_manifest",
    "read_run",
    "read_transactions",
    "record_failure",
    "registry_with",
    "run_log",
    "run_partition",
    "run_pipeline",
    "run_until_done",
    "runs_table",
    "runs_text",
    "with_concurrency",
    "write_json",
    "write_manifest",
    "write_report",
    "write_transactions",
]
