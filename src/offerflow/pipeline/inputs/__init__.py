"""Reading a partner's input: files opened as text columns, parsed into usable rows and rejects.

- :mod:`~offerflow.pipeline.inputs.sources`: a CSV or Parquet file as chunks of text columns;
- :mod:`~offerflow.pipeline.inputs.reader`: the canonical transaction table and the rejects;
- :mod:`~offerflow.pipeline.inputs.rejects`: too many rejects stop a run, naming their reasons;
- :mod:`~offerflow.pipeline.inputs.generator`: synthetic input files, for samples and benchmarks.
"""

from __future__ import annotations

from offerflow.pipeline.inputs.generator import generate_transactions, write_transactions
from offerflow.pipeline.inputs.reader import (
    CANONICAL,
    REASONS,
    TYPES,
    ReadResult,
    parse_as_of,
    read_inputs,
    read_transactions,
)
from offerflow.pipeline.inputs.rejects import check_rejects, describe_rejects

__all__ = [
    "CANONICAL",
    "REASONS",
    "TYPES",
    "ReadResult",
    "check_rejects",
    "describe_rejects",
    "generate_transactions",
    "parse_as_of",
    "read_inputs",
    "read_transactions",
    "write_transactions",
]
