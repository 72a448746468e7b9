"""The fault plan: valid plans only, and draws that depend on the seed and the request alone."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from tests.faults import DEFAULT_HUGE_BYTES, POST_ROUTES, Plan, Rule, draw
from tests.faults.calls import ATS, faulted

pytestmark = pytest.mark.timeout(30)


def test_another_seed_draws_other_hits() -> None:
    rules = {"routes": {ATS: [{"fault": "reset", "rate": 0.5}]}}
    calls = [(f"m-{n}", 1) for n in range(100)]
    draws = [faulted(Plan.model_validate(rules | {"seed": seed}), calls) for seed in (0, 0, 1)]
    assert draws[0] == draws[1] != draws[2]


@pytest.mark.parametrize(
    ("plan", "complaint"),
    [
        ({"routes": {"/ml/nope": []}}, "routes"),
        ({"rules": []}, "rules"),
        ({"routes": {ATS: [{"fault": "teleport"}]}}, "fault"),
        ({"routes": {ATS: [{"fault": "status"}]}}, "needs code"),
        ({"routes": {ATS: [{"fault": "reset", "code": 503}]}}, "takes no code"),
        ({"routes": {ATS: [{"fault": "reset", "rate": 1.5}]}}, "rate"),
        ({"routes": {ATS: [{"fault": "reset", "per": "day"}]}}, "per"),
        ({"routes": {ATS: [{"fault": "reset", "attempts": [0]}]}}, "attempts"),
    ],
)
def test_an_invalid_plan_is_refused(plan: dict[str, Any], complaint: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=complaint):
        Plan.model_validate(plan)


def test_draws_are_spread_over_zero_to_one() -> None:
    values = [draw(0, 0, ATS, f"m-{n}", attempt) for n in range(200) for attempt in (1, 2, None)]
    assert all(0 <= value < 1 for value in values)
    assert min(values) < 0.1 < 0.9 < max(values)


def test_the_first_rule_that_hits_applies() -> None:
    plan = Plan.model_validate(
        {"routes": {ATS: [{"fault": "hang", "rate": 0.0}, {"fault": "reset"}, {"fault": "nan"}]}}
    )
    rule = plan.choose(ATS, "m-1", 1)
    assert rule is not None
    assert rule.fault == "reset"


def test_a_route_s_own_rules_come_before_the_star_rules() -> None:
    plan = Plan.model_validate({"routes": {"*": [{"fault": "nan"}], ATS: [{"fault": "reset"}]}})
    chosen = [plan.choose(path, "m-1", 1) for path in [*POST_ROUTES, "/"]]
    assert [None if rule is None else rule.fault for rule in chosen] == [
        "reset",
        "nan",
        "nan",
        None,
    ]


@pytest.mark.parametrize(
    ("attempt", "hits"), [(1, False), (2, True), (3, True), (4, False), (None, False)]
)
def test_a_rule_with_attempts_hits_only_those(attempt: int | None, hits: bool) -> None:
    plan = Plan.model_validate({"routes": {ATS: [{"fault": "reset", "attempts": [2, 3]}]}})
    assert (plan.choose(ATS, "m-1", attempt) is not None) == hits


def test_a_per_member_draw_ignores_the_attempt() -> None:
    plan = Plan.model_validate(
        {"routes": {ATS: [{"fault": "reset", "per": "member", "rate": 0.5}]}}
    )
    calls = [(f"m-{n}", attempt) for n in range(100) for attempt in (1, 2, 3)]
    hit_members = {member for member, _ in faulted(plan, calls)}
    assert faulted(plan, calls) == {(m, a) for m, a in calls if m in hit_members}


def test_a_huge_answer_is_at_least_3_mb_unless_the_rule_says() -> None:
    assert Rule(fault="huge").size_bytes == DEFAULT_HUGE_BYTES >= 3_000_000
    assert Rule(fault="huge", size_bytes=1000).size_bytes == 1000
