"""The offer workflow: the DAG of read → features → models → offer → record, built from a config.

::

    read ──► features ──► ats ──┐
      │                         ├─► join ──► offer ──► record
      │                └──► resp ┘                      ▲ (failures too)
      └──► unscored (members with no usable transaction) ┘

Models may take other models' predictions (``request: {field: other_model}``); such a model runs
after the models it names, and a cycle among them is a graph error before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from offerflow.config import EndpointConfig, PartnerConfig
from offerflow.engine import Failure, Policy, Workflow
from offerflow.errors import ConfigError, EndpointError, OutputError
from offerflow.pipeline.client import ModelClient
from offerflow.pipeline.features import DEFAULT_REGISTRY, compute_features
from offerflow.pipeline.members import Member, MemberRows, Status
from offerflow.pipeline.reader import ReadResult, read_transactions
from offerflow.pipeline.sinks import ChunkedTable

__all__ = ["RESERVED_TASKS", "Recorder", "build_workflow", "check_config", "offers_schema"]

RESERVED_TASKS = frozenset({"read", "features", "unscored", "record"})

# the canonical transactions table with no rows: gives the features' schema before any data
_NO_TRANSACTIONS = pl.DataFrame(
    schema={
        "line": pl.Int64,
        "member_id": pl.String,
        "ts": pl.Datetime("us", "UTC"),
        "type": pl.String,
        "points": pl.Float64,
        "revenue": pl.Float64,
    }
)


def offers_schema(config: PartnerConfig) -> dict[str, pl.DataType]:
    """The columns of offers.parquet, in order."""
    _check_features(config)
    features = compute_features(_NO_TRANSACTIONS, config.features, as_of=datetime.now(UTC))
    schema: dict[str, pl.DataType] = {"member_id": pl.String()}
    schema.update({name: features.schema[name] for name in config.features})
    schema.update({f"{m.name}_prediction": pl.Float64() for m in config.models})
    schema.update({"offer": pl.String(), "status": pl.String(), "error": pl.String()})
    schema.update({f"{e.name}_ms": pl.Float64() for e in config.endpoints})
    schema["attempts"] = pl.Int32()
    return schema


def build_workflow(
    config: PartnerConfig,
    *,
    as_of: datetime,
    client: ModelClient,
    recorder: Recorder,
    skip: pl.Series | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Workflow:
    """The offer workflow for one partner, writing through ``recorder``.

    Members in ``skip`` (already committed by an earlier session of the run) are left alone;
    once ``stop()`` is true no new member is taken.
    """
    _check_features(config)
    clash = sorted(RESERVED_TASKS & {e.name for e in config.endpoints})
    if clash:
        raise ConfigError(f"endpoint names {clash} are reserved for the workflow's own tasks")
    done = pl.DataFrame(
        {"member_id": skip if skip is not None else []}, schema={"member_id": pl.String}
    )
    deadline_s = config.member_deadline_s
    wf = Workflow(f"offers:{config.partner}")

    def read() -> ReadResult:
        recorder.read = read_transactions(
            config.input.path,
            as_of=as_of,
            columns=config.input.columns,
            fmt=config.input.format,
            type_aliases=config.input.type_aliases,
        )
        return recorder.read

    def features(read: ReadResult) -> MemberRows:
        table = compute_features(read.transactions, config.features, as_of=as_of)
        return MemberRows(table.join(done, on="member_id", how="anti"), stop=stop)

    async def unscored(read: ReadResult) -> int:
        idle = (
            read.members.to_frame("member_id")
            .join(read.transactions.select("member_id"), on="member_id", how="anti")
            .join(done, on="member_id", how="anti")
        )
        for member_id in idle.get_column("member_id"):
            recorder.record(Member(member_id, {}), Status.NO_TRANSACTIONS)
        return idle.height

    wf.batch("read", read)
    wf.batch("features", features, after=["read"])
    wf.batch("unscored", unscored, after=["read"])

    models = {m.name: m for m in config.models}
    for model in config.models:
        upstream = _upstream(wf, model.name, _model_sources(model, models))
        wf.stream(
            model.name,
            _stage(client, model, config.features, deadline_s),
            after=upstream,
            concurrency=model.concurrency,
            key=_member_key if upstream == "features" else None,
        )
    consumed = {s for m in config.models for s in _model_sources(m, models)}
    leaves = [m.name for m in config.models if m.name not in consumed]
    offer_upstream = _upstream(wf, config.offer.name, leaves)
    wf.stream(
        config.offer.name,
        _stage(client, config.offer, config.features, deadline_s),
        after=offer_upstream,
        concurrency=config.offer.concurrency,
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


def check_config(config: PartnerConfig) -> tuple[str, ...]:
    """Check all of a config that can be checked without running it; returns the task order."""
    if not config.input.path.exists():
        raise ConfigError(f"input file {config.input.path} does not exist", key="input.path")
    table = ChunkedTable(config.output.dir, "offers", offers_schema(config), chunk_rows=1)
    workflow = build_workflow(
        config, as_of=datetime.now(UTC), client=ModelClient(()), recorder=Recorder(table)
    )
    return workflow.validate()


def _check_features(config: PartnerConfig) -> None:
    known = DEFAULT_REGISTRY.names()
    unknown = [name for name in config.features if name not in known]
    if unknown:
        named = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown feature(s) {', '.join(named)}", key="features")


def _member_key(member: Member) -> str:
    return member.member_id


def _model_sources(model: EndpointConfig, models: Mapping[str, EndpointConfig]) -> list[str]:
    """The models whose predictions ``model`` takes, in request order."""
    return [s for s in (model.request or {}).values() if s in models]


def _upstream(wf: Workflow, name: str, sources: list[str]) -> str:
    """The task a stage reads from: features, the one model it takes, or a join of several."""
    if not sources:
        return "features"
    if len(sources) == 1:
        return sources[0]
    join = f"{name}_inputs"
    wf.join(join, after=sorted(set(sources)))
    return join


def _stage(
    client: ModelClient, endpoint: EndpointConfig, features: tuple[str, ...], deadline_s: float
) -> Callable[[Member | dict[str, Member]], Any]:
    """The stream function of one endpoint: build the request, call, add the answer."""
    fields = endpoint.request or {name: name for name in features}
    name = endpoint.name

    async def call(item: Member | dict[str, Member]) -> Member:
        member = item if isinstance(item, Member) else Member.merge(item.values())
        if member.deadline == math.inf:  # the member's first call starts its clock
            member = dataclasses.replace(member, deadline=time.monotonic() + deadline_s)
        known = {**member.features, **member.predictions}
        body = orjson.dumps({field: known[source] for field, source in fields.items()})
        result = await client.call(name, member.member_id, body, deadline=member.deadline)
        return member.with_answer(name, result.value, result.latency_ms, result.attempts)

    return call


class Recorder:
    """Turns members and failures into rows of the offers table, one per member."""

    def __init__(self, table: ChunkedTable) -> None:
        self.table = table
        #: the read result, once the read task has it (the run needs it even if cancelled)
        self.read: ReadResult | None = None

    def record_item(self, item: Member | Failure) -> None:
        """Record what reached the end of the workflow: a scored member or a failure."""
        if isinstance(item, Member):
            self.record(item, Status.OK)
            return
        error = item.error
        status = Status(error.status) if isinstance(error, EndpointError) else Status.MODEL_ERROR
        parts = [v for v in (item.value, *item.partial.values()) if v is not None]
        states = [p for v in parts for p in (v.values() if isinstance(v, dict) else [v])]
        member = Member.merge(states)
        if isinstance(error, EndpointError):
            member = dataclasses.replace(
                member, attempts={**member.attempts, error.endpoint: error.attempt}
            )
        self.record(member, status, f"{item.task}: {type(error).__name__}: {error}")

    def record(self, member: Member, status: Status, error: str | None = None) -> None:
        """Append one member's row."""
        row: dict[str, Any] = {"member_id": member.member_id, "status": status, "error": error}
        row.update(member.features)
        for model, value in member.predictions.items():
            row[f"{model}_prediction"] = value
        for stage, latency in member.latencies_ms.items():
            row[f"{stage}_ms"] = latency
        row["offer"] = member.offer
        row["attempts"] = sum(member.attempts.values())
        self.table.append(row)
