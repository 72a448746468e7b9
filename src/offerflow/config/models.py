"""The partner config: what differs from one partner to the next, validated and frozen."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BUNDLED_SCHEME",
    "DEFAULT_COLUMNS",
    "DEFAULT_FEATURES",
    "BreakerConfig",
    "EndpointConfig",
    "InputConfig",
    "ModelConfig",
    "OfferConfig",
    "OutputConfig",
    "PartnerConfig",
    "RetryBudgetConfig",
]

#: a URL of the form ``bundled:/path`` names a route of the bundled model server, which the run
#: starts on 127.0.0.1 and stops afterwards
BUNDLED_SCHEME = "bundled:"

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

    path: Path
    format: Literal["csv", "parquet"] | None = None
    columns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    type_aliases: dict[str, str] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _all_canonical_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; expected {sorted(DEFAULT_COLUMNS)}"
            )
        return {**DEFAULT_COLUMNS, **columns}


class BreakerConfig(_Strict):
    """When an endpoint's circuit breaker opens, and for how long before it probes."""

    failures: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=5.0, ge=0)


class RetryBudgetConfig(_Strict):
    """Run-wide cap on retries: at most ``ratio`` of calls, plus ``floor``."""

    ratio: float = Field(default=0.2, ge=0, le=10)
    floor: int = Field(default=20, ge=0)


class EndpointConfig(_Strict):
    """One HTTP endpoint: where it is, what it receives, where its answer is, and its limits."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    url: str
    #: request field -> source (a feature name, or the name of a model whose prediction it takes);
    #: None sends every selected feature under its own name
    request: dict[str, str] | None = None
    response_field: str
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=20)
    concurrency: int = Field(default=32, ge=1, le=4096)
    backoff_initial_s: float = Field(default=0.05, gt=0)
    backoff_max_s: float = Field(default=2.0, gt=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    #: statuses worth another attempt: 429, 408 and 5xx only (other 4xx are never retried)
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("retry_statuses")
    @classmethod
    def _only_transient_statuses(cls, statuses: frozenset[int]) -> frozenset[int]:
        wrong = sorted(s for s in statuses if s not in (408, 429) and not 500 <= s <= 599)
        if wrong:
            raise ValueError(f"{wrong} cannot be retried: only 408, 429 and 5xx are transient")
        return statuses

    @model_validator(mode="after")
    def _backoff_is_ordered(self) -> EndpointConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                f"({self.backoff_initial_s})"
            )
        return self

    @field_validator("url")
    @classmethod
    def _url_is_usable(cls, url: str) -> str:
        if url.startswith(BUNDLED_SCHEME):
            if not url.removeprefix(BUNDLED_SCHEME).startswith("/"):
                raise ValueError(f"{url!r}: a bundled URL is 'bundled:/route'")
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL (or 'bundled:/route')")
        return url


class ModelConfig(EndpointConfig):
    """A model endpoint; its prediction is a finite number at ``response_field``."""

    response_field: str = "prediction"


class OfferConfig(EndpointConfig):
    """The offer endpoint; its request maps fields to model names, its answer is a string."""

    name: str = Field(default="offer", pattern=r"^[a-z][a-z0-9_]*$")
    request: dict[str, str]
    response_field: str = "offer"


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
        clash = sorted(set(names) & set(self.features))
        if clash:
            raise ValueError(f"endpoint names clash with feature names: {clash}")
        models = {m.name for m in self.models}
        for model in self.models:
            for field, source in (model.request or {}).items():
                if source not in self.features and source not in models:
                    raise ValueError(
                        f"models.{model.name}.request.{field}: {source!r} is neither a selected "
                        f"feature nor a model"
                    )
        for field, source in self.offer.request.items():
            if source not in models:
                raise ValueError(f"offer.request.{field}: {source!r} is not a model name")
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
