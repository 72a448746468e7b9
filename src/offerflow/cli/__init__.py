"""The ``offerflow`` command: parse arguments, load the config, call the pipeline, map exit codes.

Heavy modules (polars, httptools, FastAPI) are imported inside the commands that need them, so that
``offerflow --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from offerflow import __version__
from offerflow.cli.run import no_collections as _no_collections
from offerflow.cli.run import run_command
from offerflow.errors import ExitCode, OfferflowError, UsageError

if TYPE_CHECKING:
    from offerflow.config import PartnerConfig

__all__ = ["entry", "main"]

log = logging.getLogger("offerflow.cli")

#: the rows of each input file ``validate`` reads: a run's checks on a sample of them
VALIDATE_SAMPLE_ROWS = 10_000
#: the suffixes ``generate-data`` writes
_DATA_SUFFIXES = (".csv", ".parquet", ".pq")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (README, "Exit codes")."""
    args = _parser().parse_args(argv)
    _configure_console_logging(args.verbose, args.log_level, args.log_format)
    try:
        code: int = args.command(args)
    except OfferflowError as error:
        print(f"offerflow: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("offerflow: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    return code


def entry() -> NoReturn:
    """The ``offerflow`` command: :func:`main`, then the process exits with its code.

    Every object is frozen first, so that the interpreter's last garbage collections skip them:
    they would scan everything only to free memory the process gives back (see
    ``docs/architecture.md``, "The garbage collector"). Files are closed by then: outputs are
    written in ``with`` blocks and renamed atomically, and logging is flushed by ``atexit``.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offerflow",
        description="Compute member features, score them on the partner's model endpoints, "
        "assign offers, and record everything.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 bad config or input, 3 member failures above "
        "the budget, 4 output I/O error, 5 drift beyond the partner's limits (compare "
        "--fail-on-drift), 130/143 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"offerflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="the least level logged to stderr (default: warning on a terminal, else info; "
        "-v info, -vv debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr's log lines: text, or one JSON object per line like run.log",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the offer pipeline for one partner")
    run.add_argument("--config", type=Path, help="partner config (default: the bundled partner)")
    run.add_argument(
        "--input", help="transactions file (or glob, or s3:// URL), instead of the config's"
    )
    run.add_argument("--as-of", help="YYYY-MM-DD: features as of the end of that UTC day")
    run.add_argument("--out", help="output directory, or an s3:// URL (default: the config's)")
    run.add_argument("--concurrency", type=_positive, help="in-flight requests per endpoint")
    run.add_argument(
        "--server-workers",
        type=_positive,
        default=2,
        help="uvicorn workers of the bundled model server, when the config uses it (default 2)",
    )
    run.add_argument(
        "--run-id",
        help="name of the run directory: 1 to 128 letters, digits, '.', '_' or '-', starting "
        "with a letter or digit (default: time + random)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish an earlier run: score only members without a committed ok result",
    )
    run.add_argument(
        "--baseline",
        type=Path,
        metavar="RUN_DIR",
        help="compare the run with this earlier one in its report.html",
    )
    run.add_argument(
        "--backend",
        choices=("local", "dask"),
        default="local",
        help="where the members are scored: in this process (local) or on a Dask cluster",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
        help="the Dask scheduler to use (default: $DASK_SCHEDULER_ADDRESS, else a local cluster)",
    )
    run.add_argument(
        "--workers", type=_positive, help="worker processes of a local Dask cluster (default 2)"
    )
    run.add_argument(
        "--partitions",
        type=_positive,
        help="partitions of the members on Dask (default: 4 per worker thread)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics on 127.0.0.1:PORT while the run goes (0: a free port)",
    )
    run.set_defaults(command=run_command)

    serve = commands.add_parser("serve-models", help="serve the bundled model endpoints")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000, help="0 picks a free port")
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(command=_cmd_serve)

    generate = commands.add_parser("generate-data", help="write a synthetic transactions file")
    generate.add_argument("--members", type=_positive, required=True)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", type=_data_file, required=True, help=".csv or .parquet")
    generate.add_argument(
        "--config",
        type=Path,
        help="write in this partner's layout: columns, type spellings, timestamps, CSV format",
    )
    generate.set_defaults(command=_cmd_generate)

    dag = commands.add_parser("dag", help="draw a partner's workflow")
    dag.add_argument("--config", type=Path, help="partner config (default: the bundled partner)")
    dag.add_argument(
        "--format",
        choices=("text", "mermaid"),
        default="text",
        help="aligned text, or a Mermaid flowchart for a README or a pull request",
    )
    dag.set_defaults(command=_cmd_dag)

    validate = commands.add_parser("validate", help="check a partner config without running it")
    validate.add_argument("config", type=Path)
    validate.add_argument(
        "--check-endpoints",
        action="store_true",
        help="also compare each endpoint's published request schema with what would be sent",
    )
    validate.set_defaults(command=_cmd_validate)

    report = commands.add_parser("report", help="write a run's report.html")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument(
        "--baseline", type=Path, metavar="RUN_DIR", help="add a comparison with this earlier run"
    )
    report.set_defaults(command=_cmd_report)

    runs = commands.add_parser("runs", help="list past runs, newest first")
    runs.add_argument("--out", type=Path, default=Path("runs"), help="output directory (runs)")
    runs.add_argument("--partner", help="only this partner's runs")
    runs.add_argument("--format", choices=("text", "json"), default="text")
    runs.set_defaults(command=_cmd_runs)

    compare = commands.add_parser(
        "compare", help="compare a run with a baseline run: drift, offer mix, latency, ledgers"
    )
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="the baseline run directory")
    compare.add_argument(
        "run_b", type=Path, metavar="RUN_B", help="the run compared; its config gives the limits"
    )
    compare.add_argument("--format", choices=("text", "json"), default="text")
    compare.add_argument(
        "--fail-on-drift",
        action="store_true",
        help="exit 5 when a figure is beyond the partner's drift limits",
    )
    compare.set_defaults(command=_cmd_compare)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0 to 65535; 0 picks a free one)")
    return value


def _data_file(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in _DATA_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: the suffix says the format: .csv or .parquet")
    return path


_console_handler: logging.Handler | None = None


def _configure_console_logging(verbose: int, named: str | None, form: str) -> None:
    """Log to stderr: warnings on a terminal (the progress bar tells the rest), else info,
    unless ``named`` says which level; as text, or as JSON lines when ``form`` says so.

    A failed HTTP attempt's line (one per attempt: an outage makes thousands) is shown only
    with ``-v`` or a level ``named``; ``run.log`` has every one.
    """
    global _console_handler
    quiet = logging.WARNING if sys.stderr.isatty() else logging.INFO
    level = (quiet, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if named is not None:
        level = logging.getLevelNamesMapping()[named.upper()]
    root = logging.getLogger()
    if _console_handler is None:
        _console_handler = logging.StreamHandler()
        _console_handler.addFilter(_not_printed_by_main)
        root.addHandler(_console_handler)
    if form == "json":
        from offerflow.pipeline.outputs.runlog import JsonLines

        _console_handler.setFormatter(JsonLines())
    else:
        _console_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    if verbose or named is not None:
        _console_handler.removeFilter(_not_an_attempt)
    else:
        _console_handler.addFilter(_not_an_attempt)
    # the handler filters the console; the loggers let INFO through for the run log
    _console_handler.setLevel(level)
    root.setLevel(min(level, logging.INFO))


def _not_printed_by_main(record: logging.LogRecord) -> bool:
    """False for the record that ends a failed run: :func:`main` prints that error itself."""
    return not hasattr(record, "exit_code")


def _not_an_attempt(record: logging.LogRecord) -> bool:
    """False for the record of a failed HTTP attempt (it names its attempt)."""
    return not hasattr(record, "attempt")


def _cmd_serve(args: argparse.Namespace) -> int:
    from offerflow.serving import serve

    serve(host=args.host, port=args.port, workers=args.workers, access_log=args.access_log)
    return ExitCode.OK


def _cmd_generate(args: argparse.Namespace) -> int:
    from offerflow.errors import OutputError
    from offerflow.pipeline import generate_transactions, write_transactions

    layout: dict[str, Any] = {}
    csv = None
    if args.config is not None:
        from offerflow.config import load_config

        source = load_config(args.config).input
        spelling: dict[str, str] = {}
        for alias, kind in source.type_aliases.items():
            spelling.setdefault(kind, alias)
        layout = {"columns": source.columns, "type_spelling": spelling}
        if source.timestamp_format is not None:
            layout["timestamp_format"] = source.timestamp_format
        if source.timezone is not None:
            layout["timezone"] = source.timezone
        csv = layout["numbers"] = source.csv
    if not args.out.parent.is_dir():  # found before the data is made
        raise OutputError("no such directory", path=args.out.parent)
    table = generate_transactions(args.members, seed=args.seed, **layout)
    try:
        write_transactions(table, args.out, csv)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=args.out) from exc
    print(f"wrote {table.height} rows for {args.members} members to {args.out}")
    return ExitCode.OK


def _cmd_validate(args: argparse.Namespace) -> int:
    """Check what a run checks before its first model call; print ok only once all passed."""
    from offerflow.config import load_config
    from offerflow.pipeline import check_config, check_input, parse_as_of, read_input

    config = load_config(args.config)
    order = check_config(config)
    now = parse_as_of(None)
    sample = read_input(config, now, rows=VALIDATE_SAMPLE_ROWS)
    check_input(config, sample, now, sample=VALIDATE_SAMPLE_ROWS)
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sample.rejects_by_reason.items())
    print(
        f"input {config.input.path}: {sample.rows_used:,} of {sample.rows_in:,} rows usable"
        + (f", rejected: {reasons}" if reasons else "")
        + f" (each file's first {VALIDATE_SAMPLE_ROWS:,} rows at most)"
    )
    if args.check_endpoints:
        _check_endpoints(config)
    print(f"{args.config}: ok — partner {config.partner!r}, tasks: {' → '.join(order)}")
    return ExitCode.OK


def _check_endpoints(config: PartnerConfig) -> None:
    """Print what each endpoint's contract says; raise on a mismatch or an unreachable one."""
    import anyio

    from offerflow.errors import ContractError
    from offerflow.pipeline import ContractReport, check_contracts, client_for
    from offerflow.serving import BundledServer

    async def check(config: PartnerConfig) -> ContractReport:
        async with client_for(config) as client:
            return await check_contracts(config, client)

    with contextlib.ExitStack() as stack:
        if config.uses_bundled_server:
            server = stack.enter_context(BundledServer(workers=1))
            config = config.with_bundled_base(server.base_url)
        report = anyio.run(check, config)
    unchecked = [e.name for e in config.endpoints if e.name not in report.checked]
    print(f"endpoints checked: {', '.join(report.checked) or 'none'}", end="")
    print(f"; publishing no schema: {', '.join(unchecked)}" if unchecked else "")
    if report.unreachable:
        raise UsageError("endpoints could not be reached:\n  " + "\n  ".join(report.unreachable))
    if report.mismatches:
        raise ContractError(report.mismatches)


def _cmd_dag(args: argparse.Namespace) -> int:
    with _no_collections():
        from offerflow.cli.dag import draw
        from offerflow.config import load_config
        from offerflow.pipeline import workflow_graph

    config = load_config(args.config)
    print(draw(f"offers:{config.partner}", workflow_graph(config), args.format), end="")
    return ExitCode.OK


def _cmd_report(args: argparse.Namespace) -> int:
    with _no_collections():
        from offerflow.pipeline import write_report

    print(f"wrote {write_report(args.run_dir, args.baseline)}")
    return ExitCode.OK


def _cmd_runs(args: argparse.Namespace) -> int:
    import json

    from offerflow.pipeline import list_runs, runs_table, runs_text

    rows = runs_table(list_runs(args.out, args.partner))
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif rows:
        print(runs_text(rows))
    else:
        print(f"no runs under {args.out}")
    return ExitCode.OK


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from offerflow.errors import DriftExceeded
    from offerflow.pipeline import compare_runs, read_run

    comparison = compare_runs(read_run(args.run_a), read_run(args.run_b))
    if args.format == "json":
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        print(comparison.as_text(), end="")
    if args.fail_on_drift and comparison.drifted:
        raise DriftExceeded(comparison.drifted, baseline=args.run_a, run=args.run_b)
    return ExitCode.OK
