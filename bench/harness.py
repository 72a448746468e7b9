"""``python -m bench``: start the model server, measure every size, the features, ``--help``.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import offerflow
from bench.features import FeatureStage, measure_features
from bench.report import format_report, machine, speed_probe, write_results
from bench.runs import Size, measure_size
from bench.startup import HelpTiming, measure_help
from bench.workload import REPO, WORK, input_file, write_partner
from offerflow.serving import BundledServer

__all__ = ["main"]

#: the seed of every generated input, so that two harness runs measure the same members
SEED = 7
_HELP_RUNS = 10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the offer pipeline against the bare requests it has to make.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=(1_000, 10_000, 100_000),
        help="members per input, comma-separated (default 1000,10000,100000)",
    )
    parser.add_argument("--repeats", type=_positive, default=3, help="pipeline/floor pairs")
    parser.add_argument(
        "--server-workers", type=_positive, default=2, help="uvicorn workers of the model server"
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=32, help="in-flight requests per endpoint"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results.json", help="results file"
    )
    parser.add_argument(
        "--features-rows",
        type=_positive,
        default=5_000_000,
        help="rows of the feature-stage input (default 5000000)",
    )
    parser.add_argument("--skip-features", action="store_true", help="skip the feature stage")
    parser.add_argument("--work", type=Path, default=WORK, help=argparse.SUPPRESS)
    return parser


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write results.json. Returns the exit code."""
    args = _parser().parse_args(argv)
    work: Path = args.work
    facts = machine()
    results: dict[str, Any] = {
        "machine": facts,
        "settings": {
            "sizes": list(args.sizes),
            "repeats": args.repeats,
            "server_workers": args.server_workers,
            "concurrency": args.concurrency,
            "features_rows": None if args.skip_features else args.features_rows,
            "seed": SEED,
        },
        "notes": "server CPU is not measured; floor wall_s is its request phase only",
        "sizes": {},
        "features": None,
        "help": [],
    }
    sizes: list[Size] = []
    # Byte-compiled like an installed wheel: an editable install under PYTHONDONTWRITEBYTECODE
    # would have every child compile offerflow's source again (about 40 ms a start).
    compileall.compile_dir(Path(offerflow.__file__).parent, quiet=1)
    # Inputs first: generating them must not run next to a measured child.
    inputs = {members: input_file(members, seed=SEED, work=work) for members in args.sizes}
    _progress(f"starting the model server with {args.server_workers} workers")
    with BundledServer(workers=args.server_workers) as server:
        results["server"] = {"base_url": server.base_url, "workers": args.server_workers}
        for members in args.sizes:
            partner = write_partner(
                work / "configs" / f"partner-{members}.yaml",
                base_url=server.base_url,
                input_path=inputs[members],
            )
            size = measure_size(
                members,
                partner,
                base_url=server.base_url,
                work=work,
                repeats=args.repeats,
                concurrency=args.concurrency,
                progress=_progress,
            )
            sizes.append(size)
            results["sizes"][str(members)] = size.as_dict()
            write_results(args.out, results)

    features: FeatureStage | None = None
    if not args.skip_features:
        _progress(f"feature stage on ~{args.features_rows} rows")
        features = measure_features(args.features_rows, seed=SEED, work=work, progress=_progress)
        results["features"] = features.as_dict()
        write_results(args.out, results)

    _progress(f"timing --help ({_HELP_RUNS} runs)")
    help_timings: list[HelpTiming] = measure_help(_HELP_RUNS)
    results["help"] = [timing.as_dict() for timing in help_timings]
    # Other work on the machine shows here: compare with machine.load_avg_at_start.
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    facts["speed_probe_s_at_end"] = speed_probe()
    write_results(args.out, results)

    print(
        format_report(
            sizes,
            features,
            help_timings,
            machine_facts=facts,
            server_workers=args.server_workers,
            concurrency=args.concurrency,
        )
    )
    _progress(f"results in {args.out}")
    return 0
