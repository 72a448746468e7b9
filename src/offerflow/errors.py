"""The one exception tree of offerflow.

Everything offerflow raises on purpose derives from :class:`OfferflowError`. The tree separates
"you used it wrong" (:class:`UsageError`: fix the config, the input or the graph) from "the world
failed" (:class:`WorldError`: an endpoint, a disk). Each error carries data, not only a message,
and has the exit code the CLI maps it to.

::

    OfferflowError                       exit 1
    ├── UsageError                       exit 2   you used it wrong
    │   ├── ConfigError                           a partner config (file, key)
    │   ├── InputError                            an input file (file, line, column)
    │   ├── ContractError                         an endpoint's schema refuses what we'd send
    │   └── GraphError                            a workflow graph
    │       ├── DuplicateTaskError
    │       ├── UnknownDependencyError
    │       └── CycleError
    ├── WorldError                                the world failed
    │   ├── EndpointError                exit 3   an endpoint call (endpoint, member, attempt)
    │   │   ├── EndpointTimeout                   an attempt, or the member's deadline, ran out
    │   │   ├── EndpointConnectionError
    │   │   ├── EndpointTLSError                  a certificate not trusted or refused: final
    │   │   ├── CircuitOpenError                  the endpoint's breaker is open: not called
    │   │   ├── EndpointStatusError               an HTTP status we did not expect
    │   │   ├── InvalidResponseError              a body that is not what the endpoint promised
    │   │   └── CallInterrupted                   the run is stopping: the call was abandoned
    │   └── OutputError                  exit 4   writing results (path)
    ├── TaskFailedError                           a task of a running workflow failed (task)
    ├── FailureBudgetExceeded            exit 3   too many members failed
    └── DriftExceeded                    exit 5   a run drifted from its baseline past the limits

An error never shows a URL whole: :func:`redact_url` keeps its scheme, host, port and path, and
drops what may hold a secret (``user:password@``, the query, the fragment).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "CallInterrupted",
    "CircuitOpenError",
    "ConfigError",
    "ContractError",
    "CycleError",
    "DriftExceeded",
    "DuplicateTaskError",
    "EndpointConnectionError",
    "EndpointError",
    "EndpointStatusError",
    "EndpointTLSError",
    "EndpointTimeout",
    "ExitCode",
    "FailureBudgetExceeded",
    "GraphError",
    "InputError",
    "InvalidResponseError",
    "OfferflowError",
    "OutputError",
    "TaskFailedError",
    "UnknownDependencyError",
    "UsageError",
    "WorldError",
    "redact_url",
]

# what a URL's host and port may look like when shown: a name or an address, a numeric port
_SHOWN_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:[0-9]*)?")


def redact_url(url: str) -> str:
    """``url`` as it may be shown anywhere: ``scheme://host:port/path``, nothing more.

    Credentials (``user:password@``), the query (which may carry an API key) and the fragment
    are dropped. A URL too malformed to tell its host from its credentials is shown as its
    scheme alone; ``bundled:/route`` keeps its route.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "(a malformed URL)"
    if not parts.scheme or (not parts.netloc and "@" in url):
        return "(not a URL)"
    if not parts.netloc:
        return f"{parts.scheme}:{parts.path}"
    host = parts.netloc.rpartition("@")[2]
    # a password holding '/', '?' or '#' unencoded ends the host early: show no host at all then
    if not _SHOWN_HOST.fullmatch(host) or "@" in parts.path:
        return f"{parts.scheme}://…"
    return f"{parts.scheme}://{host}{parts.path}"


class ExitCode:
    """The process exit codes of the ``offerflow`` command (README, "Exit codes")."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    MEMBER_FAILURES = 3
    OUTPUT = 4
    DRIFT = 5
    SIGINT = 130
    SIGTERM = 143


class OfferflowError(Exception):
    """Raised when offerflow fails for a reason it can name; the base of every offerflow error."""

    exit_code: int = ExitCode.INTERNAL


class UsageError(OfferflowError):
    """Raised when the user asked for something that cannot work: fix the input, not the world."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """Raised when a partner config cannot be read or is invalid; names the file and the key."""

    def __init__(self, message: str, *, path: Path | str | None = None, key: str | None = None):
        self.path = None if path is None else Path(path)
        self.key = key
        where = ", ".join(
            part
            for part in (
                f"{self.path}" if self.path else "",
                f"key {key!r}" if key else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class InputError(UsageError):
    """Raised when an input file cannot be used at all; names the file, and line/column if known."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        column: str | None = None,
    ):
        # a URL stays a string: Path() would fold s3:// into s3:/
        self.path = path if path is None or "://" in str(path) else Path(path)
        self.line = line
        self.column = column
        where = str(self.path) if self.path else ""
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f" column {column!r}"
        super().__init__(f"{where}: {message}" if where else message)


class ContractError(UsageError):
    """Raised when an endpoint's published schema does not accept the requests we would send."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("endpoint contracts do not match the config:\n  " + "\n  ".join(problems))


class GraphError(UsageError):
    """Raised when a workflow graph is invalid; carries the tasks involved."""

    def __init__(self, message: str, *, tasks: tuple[str, ...] = ()):
        self.tasks = tasks
        super().__init__(message)


class DuplicateTaskError(GraphError):
    """Raised when two tasks of one workflow have the same name."""


class UnknownDependencyError(GraphError):
    """Raised when a task depends on a task the workflow does not have."""


class CycleError(GraphError):
    """Raised when the dependencies of a workflow form a cycle; ``tasks`` is the cycle."""


class WorldError(OfferflowError):
    """Raised when something outside offerflow failed: an endpoint, a disk."""


class EndpointError(WorldError):
    """Raised when a call to a model or offer endpoint fails; carries endpoint, member, attempt.

    Its message names the endpoint and its URL as :func:`redact_url` shows it; ``reason`` is
    the message without them.
    """

    exit_code = ExitCode.MEMBER_FAILURES
    #: the member status a member gets when this error ends its scoring
    status: str = "model_error"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        url: str = "",
        member_id: str | None = None,
        attempt: int = 1,
    ):
        self.endpoint = endpoint
        #: the endpoint's URL as it may be shown (see :func:`redact_url`)
        self.url = redact_url(url) if url else ""
        self.reason = message
        self.member_id = member_id
        self.attempt = attempt
        super().__init__(f"endpoint {endpoint!r} ({self.url}): {message}" if url else message)


class EndpointTimeout(EndpointError):
    """Raised when an endpoint did not answer within the attempt timeout."""

    status = "endpoint_unavailable"


class EndpointConnectionError(EndpointError):
    """Raised when an endpoint cannot be reached or drops the connection."""

    status = "endpoint_unavailable"


class EndpointTLSError(EndpointError):
    """Raised when a TLS connection to an endpoint fails: its certificate is not trusted or is
    for another name, or the server refused ours. Final: retrying cannot fix a certificate."""

    status = "tls_error"


class CircuitOpenError(EndpointError):
    """Raised when an endpoint's circuit breaker is open, so the call fails fast, unsent."""

    status = "endpoint_unavailable"


class CallInterrupted(EndpointError):
    """Raised when a call is abandoned (e.g. during a backoff wait) because the run is stopping."""

    status = "interrupted"


class EndpointStatusError(EndpointError):
    """Raised when an endpoint answers with an HTTP status other than 200."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        retry_after_s: float | None = None,
        endpoint: str,
        url: str = "",
        member_id: str | None = None,
        attempt: int = 1,
    ):
        self.status_code = status_code
        #: what the answer's Retry-After header asked for, in seconds
        self.retry_after_s = retry_after_s
        super().__init__(message, endpoint=endpoint, url=url, member_id=member_id, attempt=attempt)


class InvalidResponseError(EndpointError):
    """Raised when an endpoint's body is not JSON, lacks the expected field or is not finite."""

    status = "invalid_response"


class OutputError(WorldError):
    """Raised when results cannot be written; names the path."""

    exit_code = ExitCode.OUTPUT

    def __init__(self, message: str, *, path: Path | str):
        self.path = path if "://" in str(path) else Path(path)
        super().__init__(f"{self.path}: {message}")


class TaskFailedError(OfferflowError):
    """Raised when a task of a running workflow fails as a whole; names the task and the cause."""

    def __init__(self, task: str, cause: BaseException):
        self.task = task
        self.cause = cause
        super().__init__(f"task {task!r} failed: {type(cause).__name__}: {cause}")

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """The exit code of the underlying cause when it is an offerflow error."""
        return self.cause.exit_code if isinstance(self.cause, OfferflowError) else ExitCode.INTERNAL


class FailureBudgetExceeded(OfferflowError):
    """Raised when more members failed than the partner's failure budget allows."""

    exit_code = ExitCode.MEMBER_FAILURES

    def __init__(self, failed: int, members: int, budget: float):
        self.failed = failed
        self.members = members
        self.budget = budget
        super().__init__(
            f"{failed} of {members} members failed, above the failure budget of {budget:.2%}"
        )


class DriftExceeded(OfferflowError):
    """Raised when a run drifted from its baseline beyond the partner's drift limits.

    ``figures`` names each figure past its limit, e.g. ``psi DAYS_SINCE_LAST_TRANSACTION``.
    """

    exit_code = ExitCode.DRIFT

    def __init__(self, figures: tuple[str, ...], *, baseline: Path, run: Path):
        self.figures = figures
        self.baseline = Path(baseline)
        self.run = Path(run)
        super().__init__(
            f"{self.run} drifted from {self.baseline} beyond the limits: {', '.join(figures)}"
        )
