"""The offer workflow: the DAG of read → features → models → offer → record, built from a config.

::

    read ──► features ──► ats ──┐
      │                         ├─► join ──► offer ──► record
      │                └──► resp ┘                      ▲ (failures too)
      └──► unscored (members with no usable transaction) ┘

Models may take other models' predictions (``request: {field: other_model}``); such a model runs
after the models it names, and a cycle among them is a graph error before anything runs. What
each endpoint's task does to a member is in :mod:`~offerflow.pipeline.calls`.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import anyio
import polars as pl

from offerflow.config import NO_PROXY, EndpointConfig, PartnerConfig, template_leaves
from offerflow.engine import Policy, Workflow
from offerflow.errors import ConfigError, InputError, OutputError
from offerflow.pipeline.calls import endpoint_call
from offerflow.pipeline.endpoints import AttemptSink, Codec, Endpoint, ModelClient, RetryBudget, Tls
from offerflow.pipeline.features import (
    FeatureRegistry,
    compute_features,
    registry_with,
)
from offerflow.pipeline.inputs import ReadResult, check_rejects, read_inputs
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.offers import Recorder, offers_schema
from offerflow.pipeline.outputs import ChunkedTable
from offerflow.pipeline.storage import expand, is_remote

__all__ = [
    "RESERVED_TASKS",
    "build_workflow",
    "check_config",
    "check_input",
    "client_for",
    "feature_registry",
    "read_input",
]

RESERVED_TASKS = frozenset({"read", "features", "unscored", "record"})


def build_workflow(
    config: PartnerConfig,
    *,
    as_of: datetime,
    client: ModelClient,
    recorder: Recorder,
    registry: FeatureRegistry,
    skip: pl.Series | None = None,
    stop: Callable[[], bool] = lambda: False,
    already_read: ReadResult | None = None,
) -> Workflow:
    """The offer workflow for one partner, writing through ``recorder``.

    ``registry`` (from :func:`feature_registry`) resolves the partner's features. Members in
    ``skip`` (already committed by an earlier session of the run) are left alone; once
    ``stop()`` is true no new member is taken. The read step hands on ``already_read`` (read by
    :func:`read_input` and checked by :func:`check_input`), or reads and checks the input.
    """
    clash = sorted(RESERVED_TASKS & {e.name for e in config.endpoints})
    if clash:
        raise ConfigError(f"endpoint names {clash} are reserved for the workflow's own tasks")
    done = pl.DataFrame(
        {"member_id": skip if skip is not None else []}, schema={"member_id": pl.String}
    )
    deadline_s = config.member_deadline_s
    wf = Workflow(f"offers:{config.partner}")

    def read() -> ReadResult:
        if already_read is None:
            recorder.read = read_input(config, as_of)
            check_input(config, recorder.read, as_of)
        else:
            recorder.read = already_read
        return recorder.read

    def features(read: ReadResult) -> MemberRows:
        # the transactions leave the read result here: they are not needed after the features
        transactions = read.take_transactions()
        table = compute_features(transactions, config.features, as_of=as_of, registry=registry)
        return MemberRows(table.join(done, on="member_id", how="anti"), stop=stop)

    async def unscored(read: ReadResult, features: MemberRows) -> int:
        # members without a usable transaction: neither features nor already done
        idle = (
            read.members.to_frame("member_id")
            .join(features.table.select("member_id"), on="member_id", how="anti")
            .join(done, on="member_id", how="anti")
        )
        recorder.table.append_frame(
            idle.with_columns(pl.lit(str(Status.NO_TRANSACTIONS)).alias("status"))
        )
        return idle.height

    wf.step("read", read)
    wf.step("features", features, after=["read"])
    wf.step("unscored", unscored, after=["read", "features"])

    models = {m.name: m for m in config.models}
    for model in config.models:
        upstream = _upstream(wf, model.name, _model_sources(model, models))
        first = upstream == "features"
        wf.stream(
            model.name,
            endpoint_call(client, model, deadline_s, stop if first else _never),
            after=upstream,
            concurrency=model.concurrency,
            key=_member_key if first else None,
            batch_size=model.batch_size if model.batched else None,
        )
    consumed = {s for m in config.models for s in _model_sources(m, models)}
    leaves = [m.name for m in config.models if m.name not in consumed]
    offer_upstream = _upstream(wf, config.offer.name, leaves)
    wf.stream(
        config.offer.name,
        endpoint_call(client, config.offer, deadline_s, _never),
        after=offer_upstream,
        concurrency=config.offer.concurrency,
        batch_size=config.offer.batch_size if config.offer.batched else None,
    )
    wf.stream(
        "record",
        recorder.record_item,
        after=config.offer.name,
        accepts_failures=True,
        collect=False,
        # a sink that cannot write fails the run (exit 4) rather than each member in turn
        policy=Policy(fatal=lambda error: isinstance(error, OutputError)),
    )
    return wf


def client_for(
    config: PartnerConfig,
    *,
    attempts: AttemptSink | None = None,
    stopping: anyio.Event | None = None,
    run_id: str | None = None,
) -> ModelClient:
    """The model client for a partner's endpoints (enter it with ``async with`` to call).

    ``run_id`` names the run in each request's ``X-Request-ID`` (None: a random id, for a
    client that calls outside a run). An endpoint's proxy is the one its config names
    (``load_config`` decides it from the environment when the file does not); ``none``, or not
    decided, is direct.
    """
    endpoints = [
        Endpoint(
            name=e.name,
            url=e.url,
            response_field=e.answer_path,
            answer="label" if e is config.offer else "number",
            timeout_s=e.timeout_s,
            retries=e.retries,
            backoff_initial_s=e.backoff_initial_s,
            backoff_max_s=e.backoff_max_s,
            retry_after_max_s=e.retry_after_max_s,
            retry_statuses=e.retry_statuses,
            breaker_failures=e.breaker.failures,
            breaker_cooldown_s=e.breaker.cooldown_s,
            codec=Codec.for_endpoint(
                e, config.features, "label" if e is config.offer else "number"
            ),
            headers=dict(e.headers),
            tls=_tls(e),
            proxy=None if e.proxy in (None, NO_PROXY) else e.proxy,
        )
        for e in config.endpoints
    ]
    return ModelClient(
        endpoints,
        run_id=run_id,
        connect_timeout_s=config.connect_timeout_s,
        attempts=attempts,
        budget=RetryBudget(ratio=config.retry_budget.ratio, floor=config.retry_budget.floor),
        stopping=stopping,
    )


def read_input(config: PartnerConfig, as_of: datetime, *, rows: int | None = None) -> ReadResult:
    """Read a partner's input as a run reads it; InputError (exit 2) when it cannot be read.

    ``rows`` reads only the first rows of each file, as a sample. A run checks what it read
    with :func:`check_input` before going on.
    """
    source = config.input
    if not isinstance(source.path, Path):
        raise InputError(
            "an object store's input is fetched to a local copy before it is read", path=source.path
        )
    return read_inputs(
        source.path,
        as_of=as_of,
        columns=source.columns,
        fmt=source.format,
        type_aliases=source.type_aliases,
        timestamp_format=source.timestamp_format,
        timezone=source.timezone,
        csv=source.csv,
        rows=rows,
    )


def check_input(
    config: PartnerConfig, read: ReadResult, as_of: datetime, *, sample: int | None = None
) -> None:
    """Check what :func:`read_input` read as a run does before any model call.

    Raises InputError (exit 2) when more of its rows than ``input.max_reject_rate`` are
    rejected, naming the reasons; warns when no row can be used (see
    ``offerflow.pipeline.inputs.rejects``). ``sample``: ``read`` holds only so many first rows
    of each file.
    """
    check_rejects(
        read,
        limit=config.input.max_reject_rate,
        path=config.input.path,
        columns=config.input.columns,
        timestamp_format=config.input.timestamp_format,
        as_of=as_of,
        csv=config.input.csv,
        sample=sample,
    )


def check_config(config: PartnerConfig) -> tuple[str, ...]:
    """Check all of a config that can be checked without running it; returns the task order."""
    pattern = str(config.input.path)
    if not expand(pattern) or (
        not (is_remote(pattern) or glob.has_magic(pattern)) and not Path(pattern).exists()
    ):
        raise ConfigError(f"no input file at {pattern}", key="input.path")
    return workflow_order(config)


def workflow_order(config: PartnerConfig) -> tuple[str, ...]:
    """The tasks of the config's workflow in order; a GraphError (a cycle among models) when
    the graph is not a DAG."""
    return _blueprint(config).validate()


def workflow_graph(config: PartnerConfig) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each task of the config's workflow, in order, with its kind and upstream tasks; a
    GraphError when the graph is not a DAG."""
    workflow = _blueprint(config)
    return {name: workflow.graph()[name] for name in workflow.validate()}


def _blueprint(config: PartnerConfig) -> Workflow:
    """The config's workflow, built to be looked at: it is never run."""
    registry = feature_registry(config)
    schema = offers_schema(config, registry)
    table = ChunkedTable(Path(config.output.dir), "offers", schema, chunk_rows=1)  # never written
    return build_workflow(
        config,
        as_of=datetime.now(UTC),
        client=client_for(config),
        recorder=Recorder(table),
        registry=registry,
    )


def feature_registry(config: PartnerConfig) -> FeatureRegistry:
    """The built-in features plus the partner's modules; every selected name must resolve."""
    registry = registry_with(config.feature_modules)
    for name in config.features:
        try:
            registry.get(name)
        except KeyError as error:
            raise ConfigError(str(error.args[0]), key="features") from None
    return registry


def _tls(endpoint: EndpointConfig) -> Tls | None:
    """An endpoint's own TLS settings, or None for the system's CA bundle alone."""
    if endpoint.ca_file is None and endpoint.cert_file is None:
        return None
    return Tls(endpoint.ca_file, endpoint.cert_file, endpoint.key_file)


def _never() -> bool:
    return False


def _member_key(member: Member) -> str:
    return member.member_id


def _model_sources(model: EndpointConfig, models: Mapping[str, EndpointConfig]) -> list[str]:
    """The models whose predictions ``model`` takes, in request order."""
    return [
        s for _, s in template_leaves(model.request or {}) if isinstance(s, str) and s in models
    ]


#: how far one model may run ahead of the others feeding the same task, in members
_MAX_LEAD = 1024


def _upstream(wf: Workflow, name: str, sources: list[str]) -> str:
    """The task a stage reads from: features, the one model it takes, or a join of several."""
    if not sources:
        return "features"
    if len(sources) == 1:
        return sources[0]
    join = f"{name}_inputs"
    # the models run side by side on the same members: kept in step, so that the join holds
    # a bounded number of members and no model runs alone at the end
    wf.join(join, after=sorted(set(sources)), max_lead=_MAX_LEAD)
    return join
