"""Endpoint configs: where a model or the offer endpoint is, how to talk to it, how hard to try.

A request is a **template**: a mapping whose leaves are references (a feature name, a model name
for its prediction, or ``member_id``) or literals written ``{const: value}``. Nested mappings make
nested JSON; the ``mlflow`` and ``kserve-v2`` protocols, which send columns, need a flat one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "BUNDLED_SCHEME",
    "MEMBER_ID",
    "PROTOCOLS",
    "BreakerConfig",
    "EndpointConfig",
    "ModelConfig",
    "OfferConfig",
    "ProtocolName",
    "RetryBudgetConfig",
    "template_leaves",
]

#: a URL of the form ``bundled:/path`` names a route of the bundled model server, which the run
#: starts on 127.0.0.1 and stops afterwards
BUNDLED_SCHEME = "bundled:"
#: the reference in a request template to the member's id
MEMBER_ID = "member_id"

ProtocolName = Literal["json", "json-batch", "mlflow", "kserve-v2"]
PROTOCOLS: tuple[ProtocolName, ...] = ("json", "json-batch", "mlflow", "kserve-v2")
_COLUMNAR = ("mlflow", "kserve-v2")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BreakerConfig(_Strict):
    """When an endpoint's circuit breaker opens, and for how long before it probes."""

    failures: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=5.0, ge=0)


class RetryBudgetConfig(_Strict):
    """Run-wide cap on retries: at most ``ratio`` of calls, plus ``floor``."""

    ratio: float = Field(default=0.2, ge=0, le=10)
    floor: int = Field(default=20, ge=0)


def template_leaves(
    template: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, leaf) of a request template; a ``{const: v}`` leaf is yielded as a dict."""
    for key, value in template.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and set(value) != {"const"}:
            yield from template_leaves(value, path)
        else:
            yield path, value


class EndpointConfig(_Strict):
    """One HTTP endpoint: where it is, what it receives, where its answer is, and its limits."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    url: str
    protocol: ProtocolName = "json"
    #: members per request for the batched protocols (json-batch, mlflow, kserve-v2)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    #: the request template; None sends every selected feature under its own name
    request: dict[str, Any] | None = None
    #: where the answer is: a dotted path in the JSON body (json), the list of answers
    #: (json-batch, mlflow) or the output tensor's name (kserve-v2); None: the protocol's usual
    response_field: str | None = None
    #: extra HTTP headers, e.g. ``Authorization: Bearer ${TOKEN}``; never printed or logged
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=20)
    concurrency: int = Field(default=32, ge=1, le=4096)
    backoff_initial_s: float = Field(default=0.05, gt=0)
    backoff_max_s: float = Field(default=2.0, gt=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    #: statuses worth another attempt: 429, 408 and 5xx only (other 4xx are never retried)
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    breaker: BreakerConfig = BreakerConfig()

    @property
    def batched(self) -> bool:
        """Whether a request carries several members."""
        return self.protocol != "json"

    @property
    def answer_path(self) -> str:
        """``response_field``, or the protocol's usual place for the answer."""
        return self.response_field or self._default_answer_path()

    def _default_answer_path(self) -> str:
        return {"json": "prediction", "kserve-v2": "prediction"}.get(self.protocol, "predictions")

    @field_validator("retry_statuses")
    @classmethod
    def _only_transient_statuses(cls, statuses: frozenset[int]) -> frozenset[int]:
        wrong = sorted(s for s in statuses if s not in (408, 429) and not 500 <= s <= 599)
        if wrong:
            raise ValueError(f"{wrong} cannot be retried: only 408, 429 and 5xx are transient")
        return statuses

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

    @field_validator("request")
    @classmethod
    def _template_is_well_formed(cls, template: dict[str, Any] | None) -> dict[str, Any] | None:
        if template is None:
            return None
        if not template:
            raise ValueError("an empty request template sends nothing")
        for path, leaf in template_leaves(template):
            if isinstance(leaf, Mapping):
                continue  # a {const: value} literal
            if not isinstance(leaf, str) or not leaf:
                where = ".".join(path)
                raise ValueError(
                    f"{where}: {leaf!r} is neither a reference (a feature, a model or "
                    "member_id) nor a literal written {const: value}"
                )
        return template

    @model_validator(mode="after")
    def _consistent(self) -> EndpointConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                f"({self.backoff_initial_s})"
            )
        if self.protocol in _COLUMNAR and self.request is not None:
            nested = [".".join(p) for p, _ in template_leaves(self.request) if len(p) > 1]
            if nested:
                raise ValueError(
                    f"the {self.protocol} protocol sends columns: its request cannot nest "
                    f"({', '.join(nested)})"
                )
        return self


class ModelConfig(EndpointConfig):
    """A model endpoint; its prediction is a finite number."""


class OfferConfig(EndpointConfig):
    """The offer endpoint; its request template takes model predictions, its answer is a label."""

    name: str = Field(default="offer", pattern=r"^[a-z][a-z0-9_]*$")
    request: dict[str, Any]

    def _default_answer_path(self) -> str:
        return {"json": "offer", "json-batch": "offers", "kserve-v2": "offer"}.get(
            self.protocol, "predictions"
        )
