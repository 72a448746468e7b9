"""An endpoint's task in the offer workflow: a member's request built, the endpoint called.

The workflow (:mod:`~offerflow.pipeline.workflow`) wires the tasks together; what one endpoint
task does to each member, and to a batch of them, is here, apart from the wiring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from offerflow.config import MEMBER_ID, EndpointConfig
from offerflow.engine import ItemError
from offerflow.errors import CallInterrupted, InvalidResponseError
from offerflow.pipeline.endpoints import (
    Answer,
    CallResult,
    ModelClient,
    Reads,
    log_invalid_in_batch,
)
from offerflow.pipeline.members import Member

__all__ = ["endpoint_call"]

#: what an endpoint task takes: a member, or the members of a join, by upstream task
Item = Member | dict[str, Member]


def endpoint_call(
    client: ModelClient, endpoint: EndpointConfig, deadline_s: float, stop: Callable[[], bool]
) -> Callable[..., Any]:
    """The stream function of one endpoint: build the request, call, record the answer.

    Once ``stop()`` is true it calls for no more members: they are interrupted, unsent. Only the
    endpoints that take members straight from the features are given a ``stop``: an endpoint
    after them finishes what they started (and a branch that lags another still gets the
    members the other took, to interrupt them).

    For a batched protocol it takes a list of members and gives one result per member: the
    member with its answer, or an ItemError when only its answer was unusable.
    """
    name = endpoint.name
    codec = client.endpoints[name].reader()
    known = _KNOWN[codec.reads]

    def started(item: Item) -> Member:
        member = item if isinstance(item, Member) else Member.of(item.values())
        if stop():
            raise CallInterrupted(
                "run stopping: not called",
                endpoint=name,
                url=endpoint.url,
                member_id=member.member_id,
                attempt=0,
            )
        if member.deadline == math.inf:  # the member's first call starts its clock
            member.deadline = time.monotonic() + deadline_s
        return member

    async def call(item: Item) -> Member:
        member = started(item)
        body = codec.body([known(member)])
        result = await client.call(name, member.member_id, body, deadline=member.deadline)
        return member.answer(name, result.value, result.latency_ms, result.attempts)

    async def call_batch(items: list[Item]) -> list[Member | ItemError]:
        # a member that may not start any more is interrupted alone, not with its batch
        results: list[Member | ItemError] = []
        members: list[Member] = []
        for item in items:
            try:
                members.append(started(item))
            except CallInterrupted as error:
                results.append(ItemError(error))
                continue
            results.append(members[-1])
        if not members:
            return results
        body = codec.body([known(member) for member in members])
        deadline = min(member.deadline for member in members)
        result = await client.call(
            name,
            members[0].member_id,
            body,
            deadline=deadline,
            members=len(members),
            batch=[member.member_id for member in members],
        )
        answers = dict(zip((id(m) for m in members), result.answers, strict=True))
        return [
            _answered(name, entry, answers[id(entry)], result)
            if isinstance(entry, Member)
            else entry
            for entry in results
        ]

    return call_batch if endpoint.batched else call


def _answered(name: str, member: Member, answer: Answer, result: CallResult) -> Member | ItemError:
    """A member with its answer from a batch, or an ItemError when only its answer is unusable."""
    if isinstance(answer, ValueError):
        error = InvalidResponseError(
            str(answer), endpoint=name, member_id=member.member_id, attempt=result.attempts
        )
        log_invalid_in_batch(error, request_id=result.request_id)
        return ItemError(error)
    return member.answer(name, answer, result.latency_ms, result.attempts)


def _everything(member: Member) -> Mapping[str, Any]:
    """All a request template may reference for a member."""
    return {**member.features, **member.predictions, MEMBER_ID: member.member_id}


#: what a codec's template needs of a member (see ``Codec.reads``): no merge when one will do
_KNOWN: dict[Reads, Callable[[Member], Mapping[str, Any]]] = {
    "features": lambda member: member.features,
    "predictions": lambda member: member.predictions,
    "any": _everything,
}
