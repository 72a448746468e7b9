"""What a run leaves behind: result tables, the run manifest, and what a person sees.

- :mod:`~offerflow.pipeline.outputs.sinks`: tables committed in chunks, files written atomically;
- :mod:`~offerflow.pipeline.outputs.manifest`: ``run.json``, what ``--resume`` needs;
- :mod:`~offerflow.pipeline.outputs.console`: the progress bar and the summary table;
- :mod:`~offerflow.pipeline.outputs.runlog`: ``run.log``, the run's log records as JSON lines.
"""

from __future__ import annotations

from offerflow.pipeline.outputs.console import ConsoleReport, summary_rows
from offerflow.pipeline.outputs.manifest import RunManifest, read_manifest, write_manifest
from offerflow.pipeline.outputs.runlog import JsonLines, run_log
from offerflow.pipeline.outputs.sinks import (
    DIR_MODE,
    FILE_MODE,
    ChunkedTable,
    RequestLog,
    atomic_write,
    make_dir,
    write_json,
)

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "ChunkedTable",
    "ConsoleReport",
    "JsonLines",
    "RequestLog",
    "RunManifest",
    "atomic_write",
    "make_dir",
    "read_manifest",
    "run_log",
    "summary_rows",
    "write_json",
    "write_manifest",
]
