"""What a run leaves behind: result tables, the run manifest, and what a person sees.

- :mod:`~offerflow.pipeline.outputs.sinks`: tables committed in chunks, files written atomically;
- :mod:`~offerflow.pipeline.outputs.manifest`: ``run.json``, what ``--resume`` needs;
- :mod:`~offerflow.pipeline.outputs.ledgers`: a partition's result, and a run's merged from them;
- :mod:`~offerflow.pipeline.outputs.console`: the progress bar and the summary table;
- :mod:`~offerflow.pipeline.outputs.rundir`: a run's directory, named by its run id;
- :mod:`~offerflow.pipeline.outputs.runlog`: ``run.log``, the run's log records as JSON lines;
- :mod:`~offerflow.pipeline.outputs.history`: past runs read back from their directories;
- :mod:`~offerflow.pipeline.outputs.drift`: how far a run drifted from a baseline run, as a
  :mod:`~offerflow.pipeline.outputs.comparison` (its figures, as JSON and as text);
- :mod:`~offerflow.pipeline.outputs.report`: ``report.html``, its data, markup and pictures.
"""

from __future__ import annotations

from offerflow.pipeline.outputs.comparison import Comparison
from offerflow.pipeline.outputs.console import (
    ConsoleReport,
    aligned,
    format_number,
    summary_rows,
)
from offerflow.pipeline.outputs.drift import compare_runs, drift_limits
from offerflow.pipeline.outputs.history import (
    PastRun,
    RunTables,
    list_runs,
    open_run,
    read_run,
    runs_table,
    runs_text,
    task_graph,
)
from offerflow.pipeline.outputs.ledgers import PartitionResult, TaskFigures, merge, task_figures
from offerflow.pipeline.outputs.manifest import RunManifest, read_manifest, write_manifest
from offerflow.pipeline.outputs.report import REPORT, write_report
from offerflow.pipeline.outputs.rundir import RUN_ID, check_run_id, new_run_dir
from offerflow.pipeline.outputs.runlog import JsonLines, run_log
from offerflow.pipeline.outputs.sinks import (
    DIR_MODE,
    FILE_MODE,
    PARTS,
    ChunkedTable,
    RequestLog,
    atomic_write,
    make_dir,
    write_json,
)

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PARTS",
    "REPORT",
    "RUN_ID",
    "ChunkedTable",
    "Comparison",
    "ConsoleReport",
    "JsonLines",
    "PartitionResult",
    "PastRun",
    "RequestLog",
    "RunManifest",
    "RunTables",
    "TaskFigures",
    "aligned",
    "atomic_write",
    "check_run_id",
    "compare_runs",
    "drift_limits",
    "format_number",
    "list_runs",
    "make_dir",
    "merge",
    "new_run_dir",
    "open_run",
    "read_manifest",
    "read_run",
    "run_log",
    "runs_table",
    "runs_text",
    "summary_rows",
    "task_figures",
    "task_graph",
    "write_json",
    "write_manifest",
    "write_report",
]
