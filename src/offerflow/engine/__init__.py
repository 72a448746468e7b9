"""The engine: a generic DAG workflow manager of steps, stream tasks and joins.

Build a :class:`Workflow`, run it with hooks such as :class:`MetricsHook`, get a
:class:`RunResult`. Items that fail travel on as :class:`Failure` objects (a batched stream's
fn returns an :class:`ItemError` for an item that failed); a task that fails as a whole
cancels the run and surfaces as one ``TaskFailedError``. The engine knows nothing of offers
and imports only the standard library, anyio and ``offerflow.errors``.
"""

from __future__ import annotations

from offerflow.engine.failures import Failure, ItemError
from offerflow.engine.hooks import Hook
from offerflow.engine.metrics import MetricsHook, TaskMetrics
from offerflow.engine.policy import Policy, backoff_delay, is_transient
from offerflow.engine.runner import RunResult
from offerflow.engine.workflow import Workflow

__all__ = [
    "Failure",
    "Hook",
    "ItemError",
    "MetricsHook",
    "Policy",
    "RunResult",
    "TaskMetrics",
    "Workflow",
    "backoff_delay",
    "is_transient",
]
