"""Reading a partner's input: files opened as text columns, parsed into usable rows and rejects.

- :mod:`~offerflow.pipeline.inputs.sources`: a CSV or Parquet file as chunks of text columns;
- :mod:`~offerflow.pipeline.inputs.records`: a CSV file's data cut into pieces of whole records;
- :mod:`~offerflow.pipeline.inputs.reader`: the canonical transaction table and the rejects;
- :mod:`~offerflow.pipeline.inputs.parsing`: a row's values parsed, and its reject reason;
- :mod:`~offerflow.pipeline.inputs.timestamps`: timestamps, and the as-of of a run;
- :mod:`~offerflow.pipeline.inputs.rejects`: too many rejects stop a run, naming their reasons;
- :mod:`~offerflow.pipeline.inputs.partitions`: which partition of a run each member is in;
- :mod:`~offerflow.pipeline.inputs.generator`: synthetic input files, for samples and benchmarks.
"""

from __future__ import annotations

from offerflow.pipeline.inputs.generator import generate_transactions, write_transactions
from offerflow.pipeline.inputs.parsing import CANONICAL, REASONS, TYPES, reject_reasons
from offerflow.pipeline.inputs.partitions import partition_of
from offerflow.pipeline.inputs.reader import (
    FileSource,
    ReadResult,
    TextSource,
    parse_as_of,
    read_inputs,
    read_sources,
    read_transactions,
    source_columns,
)
from offerflow.pipeline.inputs.rejects import (
    RejectFigures,
    RejectSample,
    check_rejects,
    describe_rejects,
)
from offerflow.pipeline.inputs.sources import TextChunks

__all__ = [
    "CANONICAL",
    "REASONS",
    "TYPES",
    "FileSource",
    "ReadResult",
    "RejectFigures",
    "RejectSample",
    "TextChunks",
    "TextSource",
    "check_rejects",
    "describe_rejects",
    "generate_transactions",
    "parse_as_of",
    "partition_of",
    "read_inputs",
    "read_sources",
    "read_transactions",
    "reject_reasons",
    "source_columns",
    "write_transactions",
]
