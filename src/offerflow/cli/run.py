"""``offerflow run``: a run in this process or on a Dask cluster, its input and its directory
local or on an object store (staged: see ``offerflow.pipeline.storage``)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offerflow.errors import OutputError, UsageError

if TYPE_CHECKING:
    from offerflow.config import PartnerConfig
    from offerflow.pipeline import LiveMetrics, RunReport

__all__ = ["no_collections", "run_command"]

log = logging.getLogger("offerflow.cli")


@contextlib.contextmanager
def no_collections() -> Iterator[None]:
    """The cyclic garbage collector paused, e.g. while a run imports its libraries.

    Importing polars, pydantic and the rest leaves tens of thousands of tracked objects, none
    of them garbage, that the collector would scan again and again as they come.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_command(args: argparse.Namespace) -> int:
    """Run (or resume) a partner's run as the arguments say; the exit code it earned."""
    with no_collections():
        from offerflow.config import DEFAULT_CONFIG, load_config
        from offerflow.pipeline import (
            ConsoleReport,
            check_run_id,
            new_run_dir,
            parse_as_of,
            read_manifest,
            run_log,
            serve_metrics,
            write_manifest,
        )
        from offerflow.pipeline.outputs.report import import_in_the_background
        from offerflow.pipeline.outputs.rundir import SPLIT
        from offerflow.pipeline.storage import (
            fetch_tree,
            is_remote,
            join,
            occupied,
            publish_tree,
        )

    if args.baseline is not None and not (args.baseline / "summary.json").is_file():
        raise UsageError(f"--baseline {args.baseline}: not a run directory (no summary.json)")
    with contextlib.ExitStack() as scratch:
        if args.resume is not None:
            given = [
                f"--{n.replace('_', '-')}" for n in ("config", "input", "as_of", "out", "run_id")
            ]
            clash = [
                flag for flag in given if getattr(args, flag[2:].replace("-", "_")) is not None
            ]
            if clash:
                raise UsageError(f"--resume takes the run's own settings; drop {', '.join(clash)}")
            location = str(args.resume).rstrip("/")
            if is_remote(location):
                run_dir = _staging(scratch) / Path(location).name
                if not fetch_tree(location, run_dir, skip=(SPLIT,)):  # the workers read it
                    raise UsageError(f"{location}: not a run directory (nothing there)")
            else:
                run_dir = Path(location)
        else:
            if args.run_id is not None:
                try:
                    check_run_id(args.run_id)
                except ValueError as exc:
                    raise UsageError(f"--run-id: {exc}") from None
            config = load_config(args.config)
            if args.input is not None:
                given_input: Path | str = (
                    args.input if is_remote(args.input) else Path(args.input).resolve()
                )
                config = config.model_copy(
                    update={"input": config.input.model_copy(update={"path": given_input})}
                )
            try:
                as_of = parse_as_of(args.as_of)
            except ValueError as exc:
                raise UsageError(f"--as-of: {exc}") from exc
            out = args.out if args.out is not None else config.output.dir
            if is_remote(out):
                run_dir = new_run_dir(config, _staging(scratch), args.run_id)
                location = join(str(out), config.partner, run_dir.name)
                if occupied(location):  # as a local run directory that exists
                    raise OutputError("cannot create the run directory: it exists", path=location)
            else:
                run_dir = new_run_dir(config, Path(out), args.run_id)
                location = str(run_dir)
            write_manifest(run_dir, config, args.config or DEFAULT_CONFIG, as_of)
        # every session of a run, the first included, runs what its run.json says
        manifest = read_manifest(run_dir)
        config, as_of = manifest.partner_config(run_dir), manifest.as_of
        report = ConsoleReport(sys.stderr)
        resume = args.resume is not None
        import_in_the_background()  # for the report that ends the run
        try:
            with run_log(run_dir, mode=config.output.file_mode):
                with serve_metrics(args.metrics_port, config) as live:
                    if live is not None and sys.stderr.isatty():  # else its log line shows it
                        print(f"metrics at {live.url}", file=sys.stderr)
                    if args.backend == "dask":
                        outcome = _on_dask(
                            config, args, run_dir, location, as_of, manifest, resume, live
                        )
                    else:
                        outcome = _here(
                            config, args, run_dir, scratch, as_of, manifest, report, resume, live
                        )
                _write_report(run_dir, args.baseline)  # the metrics end with the scoring
        finally:
            if is_remote(location):
                publish_tree(run_dir, location)
    report.final(outcome.summary, location)
    if outcome.error is not None:
        print(f"offerflow: error: {outcome.error}", file=sys.stderr)
    if outcome.summary.get("status") == "interrupted":
        print(f"offerflow: to finish the run: offerflow run --resume {location}", file=sys.stderr)
    return outcome.exit_code


def _write_report(run_dir: Path, baseline: Path | None) -> None:
    """``report.html`` for the run as it ended; a report that fails leaves the run as it is."""
    from offerflow.pipeline import write_report

    started = time.perf_counter()
    try:
        path = write_report(run_dir, baseline)
    except Exception as exc:  # the run's files are written: a picture of them must not undo it
        log.warning("report.html not written: %s: %s", type(exc).__name__, exc)
        return
    log.info("%s written in %.2f s", path.name, time.perf_counter() - started)


def _here(
    config: PartnerConfig,
    args: argparse.Namespace,
    run_dir: Path,
    scratch: contextlib.ExitStack,
    as_of: Any,
    manifest: Any,
    report: Any,
    resume: bool,
    live: LiveMetrics | None,
) -> RunReport:
    """The run in this process: the input read and checked before a bundled server starts."""
    from offerflow.pipeline import check_input, read_input, record_failure, run_until_done
    from offerflow.pipeline.partition import RESULTS
    from offerflow.pipeline.storage import expand, fetch, is_remote
    from offerflow.serving import BundledServer

    if args.scheduler is not None and args.backend == "local" and args.workers:
        raise UsageError("--workers is for --backend dask")
    if resume and any(p.name != "part-00000.json" for p in (run_dir / RESULTS).glob("part-*")):
        raise UsageError(f"{run_dir}: the run was partitioned on a cluster: add --backend dask")
    with contextlib.ExitStack() as stack:
        started, read, server = time.perf_counter(), None, None
        try:
            if is_remote(str(config.input.path)):
                config = _fetched_input(config, _staging(scratch), expand, fetch)
            # The input first: a file that will not do is found before a server starts.
            read = read_input(config, as_of)
            check_input(config, read, as_of)
            if config.uses_bundled_server:
                server = stack.enter_context(BundledServer(workers=args.server_workers))
                log.info("bundled model server at %s", server.base_url)
                config = config.with_bundled_base(server.base_url)
        except Exception as error:
            record_failure(
                config,
                run_dir=run_dir,
                as_of=as_of,
                error=error,
                read=read,
                wall_s=time.perf_counter() - started,
                config_hash=manifest.fingerprint,
            )
            raise
        return run_until_done(
            config,
            run_dir=run_dir,
            as_of=as_of,
            read=read,
            concurrency=args.concurrency,
            hooks=[report] if live is None else [report, live],
            progress=report.progress,
            resume=resume,
            before_exit=server.kill if server is not None else lambda: None,
            config_hash=manifest.fingerprint,
        )


def _on_dask(
    config: PartnerConfig,
    args: argparse.Namespace,
    run_dir: Path,
    location: str,
    as_of: Any,
    manifest: Any,
    resume: bool,
    live: LiveMetrics | None,
) -> RunReport:
    """The run on a Dask cluster: a scheduler's, or a local one (with the bundled server)."""
    try:
        from offerflow.distributed import DaskOptions, run_on_dask
    except ImportError as exc:  # the dask extra is not installed
        raise UsageError(
            f"--backend dask needs the dask extra: pip install 'offerflow[dask]' ({exc})"
        ) from None
    from offerflow.serving import BundledServer

    if config.uses_bundled_server and args.scheduler is not None:
        bundled = next(e for e in config.endpoints if e.url.startswith("bundled:"))
        where = "offer" if bundled is config.offer else f"models.{config.models.index(bundled)}"
        raise UsageError(
            f"key '{where}.url': a bundled: endpoint is served on this machine's 127.0.0.1, "
            "which the workers of a remote cluster cannot reach: give the endpoint's URL"
        )
    options = DaskOptions(args.scheduler, args.workers, args.partitions)
    # Dask's own INFO lines (workers starting, closing) are not the run's
    logging.getLogger("distributed").setLevel(logging.WARNING)
    config = config.with_concurrency(args.concurrency)

    def progress(done: int, partitions: int, scored: int) -> None:
        log.info("partitions %d of %d done, %d members scored", done, partitions, scored)

    with contextlib.ExitStack() as stack:
        if config.uses_bundled_server:
            server = stack.enter_context(BundledServer(workers=args.server_workers))
            log.info("bundled model server at %s", server.base_url)
            config = config.with_bundled_base(server.base_url)
        return run_on_dask(
            config,
            run_dir=run_dir,
            run_location=location,
            as_of=as_of,
            options=options,
            config_hash=manifest.fingerprint,
            resume=resume,
            progress=progress,
            on_partition=None if live is None else live.partition_done,
        )


def _fetched_input(config: PartnerConfig, into: Path, expand: Any, fetch: Any) -> PartnerConfig:
    """``config`` reading a local copy of its object store input (every file a glob names)."""
    location = str(config.input.path)
    files = expand(location)
    if not files:
        from offerflow.errors import InputError

        raise InputError("no object matches", path=location)
    copies = into / "input"
    copies.mkdir()
    local = [fetch(url, copies) for url in files]
    path = local[0] if len(local) == 1 and location == files[0] else copies / "*"
    return config.model_copy(update={"input": config.input.model_copy(update={"path": path})})


def _staging(scratch: contextlib.ExitStack) -> Path:
    """A local directory for the block's staged files, removed when it ends."""
    directory = Path(tempfile.mkdtemp(prefix="offerflow-"))
    scratch.callback(shutil.rmtree, directory, ignore_errors=True)
    return directory
