"""The partner config: what differs from one partner to the next, validated and frozen."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offerflow.config.endpoints import (
    BUNDLED_SCHEME,
    MEMBER_ID,
    EndpointConfig,
    ModelConfig,
    OfferConfig,
    RetryBudgetConfig,
    template_leaves,
)

__all__ = [
    "DEFAULT_COLUMNS",
    "DEFAULT_FEATURES",
    "InputConfig",
    "OutputConfig",
    "PartnerConfig",
]


DEFAULT_COLUMNS: dict[str, str] = {
    "member_id": "memberId",
    "ts": "lastTransactionUtcTs",
    "type": "lastTransactionType",
    "points": "lastTransactionPointsBought",
    "revenue": "lastTransactionRevenueUSD",
}

DEFAULT_FEATURES: tuple[str, ...] = (
    "AVG_POINTS_BOUGHT",
    "AVG_REVENUE_USD",
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT",
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD",
    "PCT_BUY_TRANSACTIONS",
    "PCT_GIFT_TRANSACTIONS",
    "PCT_REDEEM_TRANSACTIONS",
    "DAYS_SINCE_LAST_TRANSACTION",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class InputConfig(_Strict):
    """Where the transactions are and how their columns map to the canonical names."""

    #: a file, or a glob pattern (``data/*.csv``) whose files are read in name order
    path: Path
    format: Literal["csv", "parquet"] | None = None
    #: how timestamps are written when not ISO 8601, as a strftime pattern (``%d/%m/%Y %H:%M``)
    timestamp_format: str | None = None
    columns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    type_aliases: dict[str, str] = Field(default_factory=dict)
    #: the largest fraction of the input's rows that may be rejected: above it, the run stops
    #: after reading (exit 2), before any model call
    max_reject_rate: float = Field(default=0.5, ge=0, le=1)

    @field_validator("columns")
    @classmethod
    def _all_canonical_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; expected {sorted(DEFAULT_COLUMNS)}"
            )
        return {**DEFAULT_COLUMNS, **columns}


class OutputConfig(_Strict):
    """Where runs are written and in which formats offers are kept."""

    dir: Path = Path("runs")
    formats: tuple[Literal["parquet", "csv"], ...] = ("parquet", "csv")
    #: rows per committed chunk of a result table (a chunk is also committed every 2 s)
    chunk_rows: int = Field(default=16384, ge=1)


class PartnerConfig(_Strict):
    """Everything that differs from one partner to the next."""

    partner: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    input: InputConfig
    features: tuple[str, ...] = DEFAULT_FEATURES
    #: Python files (relative to the config file) that add features: see offerflow.pipeline
    feature_modules: tuple[Path, ...] = ()
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    offer: OfferConfig
    output: OutputConfig = OutputConfig()
    #: the fraction of scored members that may fail before the run exits 3
    failure_budget: float = Field(default=0.0, ge=0, le=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: a member's scoring, all endpoints, attempts and waits included, ends by this deadline
    member_deadline_s: float = Field(default=60.0, gt=0)
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
    #: after SIGINT/SIGTERM, how long in-flight calls may take to finish
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _references_resolve(self) -> PartnerConfig:
        names = [m.name for m in self.models] + [self.offer.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique, repeated: {duplicates}")
        clash = sorted(set(names) & {*self.features, MEMBER_ID})
        if clash:
            raise ValueError(f"endpoint names clash with feature names or member_id: {clash}")
        models = {m.name for m in self.models}
        for endpoint in self.endpoints:
            where = "offer" if endpoint is self.offer else f"models.{endpoint.name}"
            for path, leaf in template_leaves(endpoint.request or {}):
                if isinstance(leaf, str) and leaf not in {*self.features, *models, MEMBER_ID}:
                    raise ValueError(
                        f"{where}.request.{'.'.join(path)}: {leaf!r} is not a selected feature, "
                        "a model or member_id"
                    )
        if not any(
            isinstance(leaf, str) and leaf in models
            for _, leaf in template_leaves(self.offer.request)
        ):
            raise ValueError("offer.request takes no model's prediction")
        slow = [e.name for e in self.endpoints if e.timeout_s > self.member_deadline_s]
        if slow:
            raise ValueError(
                f"timeout_s of {slow} exceeds member_deadline_s ({self.member_deadline_s}): "
                "no attempt could ever use its whole timeout"
            )
        return self

    @property
    def endpoints(self) -> tuple[EndpointConfig, ...]:
        """Every endpoint the run calls: the models, then the offer."""
        return (*self.models, self.offer)

    @property
    def uses_bundled_server(self) -> bool:
        """True when some endpoint is a route of the bundled model server."""
        return any(e.url.startswith(BUNDLED_SCHEME) for e in self.endpoints)

    def with_bundled_base(self, base_url: str) -> PartnerConfig:
        """This config with every ``bundled:/route`` URL pointed at ``base_url``."""

        def resolve(url: str) -> str:
            route = url.removeprefix(BUNDLED_SCHEME)
            return base_url.rstrip("/") + route if url.startswith(BUNDLED_SCHEME) else url

        models = tuple(m.model_copy(update={"url": resolve(m.url)}) for m in self.models)
        offer = self.offer.model_copy(update={"url": resolve(self.offer.url)})
        return self.model_copy(update={"models": models, "offer": offer})

    def fingerprint(self) -> str:
        """A short stable hash of the config's content, for the run summary."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
