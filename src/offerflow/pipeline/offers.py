"""The offers table: its columns, and its rows, one per member, written by the :class:`Recorder`.

Per endpoint, ``<endpoint>_ms`` is the member's call's latency (its retries and waits included)
and ``<endpoint>_attempts`` the HTTP attempts it took: 1, plus one per retry. A call that failed
counts up to the attempt it failed at, which may be one the endpoint's open breaker or the
member's deadline stopped before it was sent (``requests.parquet`` holds only what was sent);
0 is a call the stopping run never made. Both are null for an endpoint the member never reached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from offerflow.config import PartnerConfig
from offerflow.engine import Failure
from offerflow.errors import EndpointError
from offerflow.pipeline.features import CANONICAL_SCHEMA, FeatureRegistry, compute_features
from offerflow.pipeline.inputs import ReadResult
from offerflow.pipeline.members import Member, Status
from offerflow.pipeline.outputs import ChunkedTable

__all__ = ["Recorder", "offers_schema"]


def offers_schema(config: PartnerConfig, registry: FeatureRegistry) -> dict[str, pl.DataType]:
    """The columns of offers.parquet, in order (``registry``: from ``feature_registry``)."""
    empty = pl.DataFrame(schema=CANONICAL_SCHEMA)
    features = compute_features(empty, config.features, as_of=datetime.now(UTC), registry=registry)
    schema: dict[str, pl.DataType] = {"member_id": pl.String()}
    schema.update({name: features.schema[name] for name in config.features})
    schema.update({f"{m.name}_prediction": pl.Float64() for m in config.models})
    schema.update({"offer": pl.String(), "status": pl.String(), "error": pl.String()})
    schema.update({f"{e.name}_ms": pl.Float64() for e in config.endpoints})
    schema.update({f"{e.name}_attempts": pl.Int32() for e in config.endpoints})
    return schema


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
        value = item.value
        member = value if isinstance(value, Member) else Member.of(value.values())
        if isinstance(error, EndpointError):
            member.attempts[error.endpoint] = error.attempt
        self.record(member, status, f"{item.task}: {type(error).__name__}: {error}")

    def record(self, member: Member, status: Status, error: str | None = None) -> None:
        """Append one member's row."""
        row: dict[str, Any] = {"member_id": member.member_id, "status": status, "error": error}
        row.update(member.features)
        for model, value in member.predictions.items():
            row[f"{model}_prediction"] = value
        for stage, latency in member.latencies_ms.items():
            row[f"{stage}_ms"] = latency
        for stage, attempts in member.attempts.items():
            row[f"{stage}_attempts"] = attempts
        row["offer"] = member.offer
        self.table.append(row)
