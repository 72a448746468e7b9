"""Calling the partner's endpoints: the HTTP transport, the model client, codecs, contracts.

- :mod:`~offerflow.pipeline.endpoints.transport`: keep-alive HTTP/1.1 over asyncio;
- :mod:`~offerflow.pipeline.endpoints.client`: calls with deadlines, retries and validation;
- :mod:`~offerflow.pipeline.endpoints.attempts`: an attempt's request id, record and log line;
- :mod:`~offerflow.pipeline.endpoints.retry`: Retry-After, the retry budget, the breaker;
- :mod:`~offerflow.pipeline.endpoints.codec`: request bodies and answers of each protocol;
- :mod:`~offerflow.pipeline.endpoints.contract`: endpoints' published schemas against the config.

It imports nothing else of the pipeline.
"""

from __future__ import annotations

from offerflow.pipeline.endpoints.attempts import AttemptSink, log_invalid_in_batch
from offerflow.pipeline.endpoints.client import CallResult, Endpoint, ModelClient
from offerflow.pipeline.endpoints.codec import Answer, Codec, Reads
from offerflow.pipeline.endpoints.contract import ContractReport, check_contracts
from offerflow.pipeline.endpoints.retry import CircuitBreaker, RetryBudget
from offerflow.pipeline.endpoints.transport import Tls

__all__ = [
    "Answer",
    "AttemptSink",
    "CallResult",
    "CircuitBreaker",
    "Codec",
    "ContractReport",
    "Endpoint",
    "ModelClient",
    "Reads",
    "RetryBudget",
    "Tls",
    "check_contracts",
    "log_invalid_in_batch",
]
