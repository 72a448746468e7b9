"""A fault-injecting stand-in for the partner's model service, run as a child process by tests.

``FaultServer(plan, tmp_path)`` serves the bundled app's routes with the plan's faults (status
codes, delays, hangs, resets, truncated, malformed, NaN, wrong-schema and huge answers), drawn
deterministically from each request's member and attempt headers, and logs every request.
"""

from __future__ import annotations

from tests.faults.plan import (
    ATTEMPT_HEADER,
    DEFAULT_HUGE_BYTES,
    MEMBER_HEADER,
    POST_ROUTES,
    REQUEST_ID_HEADER,
    FaultKind,
    Plan,
    Rule,
    draw,
)
from tests.faults.process import READY_PREFIX, FaultServer

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_HUGE_BYTES",
    "MEMBER_HEADER",
    "POST_ROUTES",
    "READY_PREFIX",
    "REQUEST_ID_HEADER",
    "FaultKind",
    "FaultServer",
    "Plan",
    "Rule",
    "draw",
]
