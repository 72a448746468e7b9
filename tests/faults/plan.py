"""The fault plan: which fault a request gets, drawn deterministically from its headers.

A plan is JSON, e.g.::

    {"seed": 0,
     "routes": {"/ml/ats/predict": [{"fault": "status", "code": 503, "rate": 0.1}],
                "*": [{"fault": "reset", "rate": 0.05, "per": "member"}]}}

A request on a route meets the route's own rules, then the ``"*"`` rules, in that order; the first
rule whose draw hits applies. A rule's draw is a uniform number in [0, 1) hashed with blake2b from
the seed, the rule's index in that combined list, the route, the member, and (for ``per: "call"``)
the attempt, so the same plan answers the same request the same way in every process.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_HUGE_BYTES",
    "MEMBER_HEADER",
    "POST_ROUTES",
    "REQUEST_ID_HEADER",
    "FaultKind",
    "Plan",
    "Rule",
    "draw",
]

#: the header carrying the member id of a model or offer request
MEMBER_HEADER = "X-Offerflow-Member"
#: the header carrying the 1-based attempt number of a model or offer request
ATTEMPT_HEADER = "X-Offerflow-Attempt"
#: the header naming an attempt as a whole (run, member, endpoint, attempt); logged, not drawn on
REQUEST_ID_HEADER = "X-Request-ID"
#: the routes that take faults: the bundled app's POST routes
POST_ROUTES = ("/ml/ats/predict", "/ml/resp/predict", "/offer/assign")
#: the size of a ``huge`` answer unless the rule says otherwise: 3 MiB, above 3 MB either way
DEFAULT_HUGE_BYTES = 3 * 1024 * 1024

FaultKind = Literal[
    "status", "slow", "hang", "reset", "truncate", "malformed", "wrong_schema", "nan", "huge"
]
RouteKey = Literal["/ml/ats/predict", "/ml/resp/predict", "/offer/assign", "*"]

# The parameters each kind takes, and those among them it requires.
_PARAMS: dict[str, frozenset[str]] = {
    "status": frozenset({"code", "retry_after"}),
    "slow": frozenset({"delay_s"}),
    "huge": frozenset({"size_bytes"}),
}
_REQUIRED: dict[str, frozenset[str]] = {
    "status": frozenset({"code"}),
    "slow": frozenset({"delay_s"}),
}
_COMMON = frozenset({"fault", "rate", "per", "attempts"})
# Room for the JSON around the padding of a huge answer.
_MIN_HUGE_BYTES = 64


class _Frozen(BaseModel):
    """Plan data: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Rule(_Frozen):
    """One fault, how often it hits, and on which attempts."""

    fault: FaultKind
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    per: Literal["call", "member"] = "call"
    attempts: tuple[PositiveInt, ...] | None = None
    code: int | None = Field(default=None, ge=400, le=599)
    retry_after: str | None = None
    delay_s: float | None = Field(default=None, ge=0.0)
    size_bytes: int = Field(default=DEFAULT_HUGE_BYTES, ge=_MIN_HUGE_BYTES)

    @model_validator(mode="after")
    def _params_fit_the_kind(self) -> Self:
        """Refuse parameters of another kind, and missing required ones."""
        given = self.model_fields_set - _COMMON
        foreign = given - _PARAMS.get(self.fault, frozenset())
        if foreign:
            raise ValueError(f"fault {self.fault!r} takes no {', '.join(sorted(foreign))}")
        missing = _REQUIRED.get(self.fault, frozenset()) - given
        if missing:
            raise ValueError(f"fault {self.fault!r} needs {', '.join(sorted(missing))}")
        return self

    def applies_to(self, attempt: int | None) -> bool:
        """Whether the rule may hit this attempt at all, before its draw."""
        return self.attempts is None or (attempt is not None and attempt in self.attempts)


class Plan(_Frozen):
    """A seed and the rules of each route; ``"*"`` rules apply to every POST route."""

    seed: int = 0
    routes: dict[RouteKey, tuple[Rule, ...]] = Field(default_factory=dict)

    def rules_for(self, route: str) -> tuple[Rule, ...]:
        """The rules a request on the route meets, in order: its own, then ``"*"``."""
        if route not in POST_ROUTES:
            return ()
        own = self.routes.get(cast(RouteKey, route), ())
        return own + self.routes.get("*", ())

    def choose(self, route: str, member: str | None, attempt: int | None) -> Rule | None:
        """Return the rule that applies to a request, or None for a normal answer."""
        for index, rule in enumerate(self.rules_for(route)):
            if not rule.applies_to(attempt):
                continue
            per_call = attempt if rule.per == "call" else None
            if draw(self.seed, index, route, member, per_call) < rule.rate:
                return rule
        return None


def draw(seed: int, index: int, route: str, member: str | None, attempt: int | None) -> float:
    """Return a uniform number in [0, 1), a stable hash of a rule's draw for one request."""
    # Never hash(): string hashes differ between processes unless PYTHONHASHSEED is fixed.
    parts = (str(seed), str(index), route, member or "", "" if attempt is None else str(attempt))
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
