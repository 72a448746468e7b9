"""The offer pipeline, grouped by its flow: inputs → features → endpoints → outputs.

- :mod:`~offerflow.pipeline.inputs`: the partner's file read into usable rows and rejects;
- :mod:`~offerflow.pipeline.features`: per-member features from a registry of expressions;
- :mod:`~offerflow.pipeline.endpoints`: the model and offer calls (transport, client, codecs);
- :mod:`~offerflow.pipeline.outputs`: result tables, the run manifest, the console report;

and, joining them, :mod:`~offerflow.pipeline.members` (a member on its way through),
:mod:`~offerflow.pipeline.offers` (the offers table: its columns, a row per member),
:mod:`~offerflow.pipeline.workflow` (the DAG built from a partner config, each endpoint's task
in :mod:`~offerflow.pipeline.calls`),
:mod:`~offerflow.pipeline.run` (one run: its directory, files, summary, stop and resume) and
:mod:`~offerflow.pipeline.live` (a run's counts served to Prometheus while it runs).
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
    RejectSample,
    check_rejects,
    generate_transactions,
    parse_as_of,
    read_sources,
    read_transactions,
    source_columns,
    write_transactions,
)
from offerflow.pipeline.live import LiveMetrics, serve_metrics
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.offers import Recorder, offers_schema
from offerflow.pipeline.outputs import (
    ChunkedTable,
    Comparison,
    ConsoleReport,
    PartitionResult,
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
from offerflow.pipeline.partition import (
    TABLES,
    PartitionOutcome,
    Progress,
    record_members,
    run_partition,
)
from offerflow.pipeline.run import (
    RunReport,
    check_endpoint_contracts,
    finish_run,
    loop_options,
    record_failure,
    run_pipeline,
    run_until_done,
)
from offerflow.pipeline.stopping import Shutdown
from offerflow.pipeline.workflow import (
    build_workflow,
    check_config,
    check_input,
    client_for,
    feature_registry,
    read_input,
    workflow_graph,
    workflow_order,
)

__all__ = [
    "CANONICAL_SCHEMA",
    "DEFAULT_FEATURES",
    "DEFAULT_REGISTRY",
    "TABLES",
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
    "LiveMetrics",
    "Member",
    "MemberRows",
    "ModelClient",
    "PartitionOutcome",
    "PartitionResult",
    "PastRun",
    "Progress",
    "ReadResult",
    "Recorder",
    "RejectSample",
    "RequestLog",
    "RunManifest",
    "RunReport",
    "Shutdown",
    "Status",
    "atomic_write",
    "build_workflow",
    "check_config",
    "check_contracts",
    "check_endpoint_contracts",
    "check_input",
    "check_rejects",
    "check_run_id",
    "client_for",
    "compare_runs",
    "compute_features",
    "feature_registry",
    "finish_run",
    "generate_transactions",
    "list_runs",
    "load_feature_module",
    "loop_options",
    "new_run_dir",
    "offers_schema",
    "open_run",
    "parse_as_of",
    "read_input",
    "read_manifest",
    "read_run",
    "read_sources",
    "read_transactions",
    "record_failure",
    "record_members",
    "registry_with",
    "run_log",
    "run_partition",
    "run_pipeline",
    "run_until_done",
    "runs_table",
    "runs_text",
    "serve_metrics",
    "source_columns",
    "workflow_graph",
    "workflow_order",
    "write_json",
    "write_manifest",
    "write_report",
    "write_transactions",
]
