"""The pipeline's own CPU per request: ``offerflow run`` with a transport that answers at once.

``python -m bench.overhead [--members N] [--repeats R]`` runs the default partner on N generated
members R times, each in a child process whose HTTP transport never touches the network: a
request yields to the event loop once, as a real one does while its answer is on the way, then
gets a fixed answer of the shape its endpoint expects (``{"prediction": 0.5}``, an offer label).
What the child spends between its first request and its last answer is then the pipeline's own
work around its requests (the DAG, the model client's bookkeeping, building bodies and reading
answers, the request log, the offers table) with none of the HTTP exchange's. No server shares
the cores, so this figure holds still where the ratio of ``python -m bench`` moves by 10%: it is
the one to watch while making the pipeline cheaper. ``python -m bench`` gives the floor's
transport CPU per request on the same machine; the two add up to about the pipeline's
``cpu_us/req`` there, its start-up and outputs aside.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.children import measure
from bench.workload import AS_OF, REPO, WORK, input_file, write_partner

__all__ = ["Overhead", "main"]

#: the seed of the generated input: the same members as ``python -m bench`` measures
_SEED = 7
#: where the partner's URLs point: nothing listens there, and nothing is sent there
_NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True, slots=True)
class Overhead:
    """One run with the instant transport, as its child measured it."""

    returncode: int
    requests: int
    #: process CPU (every thread) from the first request to the last answer
    phase_cpu_s: float
    phase_wall_s: float
    #: the whole child process, from outside: interpreter start to exit
    process_cpu_s: float
    process_wall_s: float

    @property
    def us_per_request(self) -> float:
        return self.phase_cpu_s / self.requests * 1e6 if self.requests else 0.0


def _child(figures: Path, argv: Sequence[str]) -> int:
    """Run ``offerflow run argv`` with the instant transport; write what it measured."""
    from offerflow.cli import main as offerflow_main
    from offerflow.config import load_config
    from offerflow.errors import redact_url
    from offerflow.pipeline.endpoints import ModelClient
    from offerflow.pipeline.endpoints.connections import Response
    from offerflow.pipeline.endpoints.transport import Route

    config = load_config(Path(argv[argv.index("--config") + 1]))
    answers = {
        redact_url(e.url): Response(200, _answer(e.answer_path, "A" if e is config.offer else 0.5))
        for e in config.endpoints
    }
    requests = 0
    first = last = (0.0, 0.0)  # (process CPU, wall) at the first request, at the last answer

    async def send(route: Route, body: bytes, *, timeout_s: float, headers: bytes = b"") -> Any:
        nonlocal requests, first, last
        if not requests:
            first = (time.process_time(), time.perf_counter())
        requests += 1
        await asyncio.sleep(0)
        last = (time.process_time(), time.perf_counter())
        return answers[route.url]

    async def no_schema(*_: Any, **__: Any) -> None:
        return None  # the contract check finds no published schema: nothing to compare

    Route.send = send  # type: ignore[method-assign, assignment]
    ModelClient.get_json = no_schema  # type: ignore[method-assign]
    code = offerflow_main(["run", *argv])
    report = {
        "returncode": code,
        "requests": requests,
        "phase_cpu_s": last[0] - first[0],
        "phase_wall_s": last[1] - first[1],
    }
    figures.write_bytes(orjson.dumps(report))
    return code


def _answer(path: str, value: float | str) -> bytes:
    """The body that holds ``value`` at a dotted ``path``."""
    document: Any = value
    for part in reversed(path.split(".")):
        document = {part: document}
    return orjson.dumps(document)


def measure_overhead(members: int, *, repeats: int, work: Path = WORK) -> list[Overhead]:
    """Run the default partner on ``members`` members ``repeats`` times with the instant
    transport, each in a child process."""
    partner = write_partner(
        work / "configs" / f"overhead-{members}.yaml",
        base_url=_NOWHERE,
        input_path=input_file(members, seed=_SEED, work=work),
    )
    runs: list[Overhead] = []
    for repeat in range(repeats):
        out = work / "runs" / f"overhead-{members}-{repeat}"
        figures = work / "runs" / f"overhead-{members}-{repeat}.json"
        figures.parent.mkdir(parents=True, exist_ok=True)
        child = measure(
            [
                sys.executable,
                "-m",
                "bench.overhead",
                "--child",
                str(figures),
                "--",
                "--config",
                str(partner.path),
                "--as-of",
                AS_OF,
                "--out",
                str(out),
            ],
            cwd=REPO,
        )
        seen = orjson.loads(figures.read_bytes())
        figures.unlink()
        shutil.rmtree(out, ignore_errors=True)
        runs.append(
            Overhead(
                returncode=int(seen["returncode"]),
                requests=int(seen["requests"]),
                phase_cpu_s=float(seen["phase_cpu_s"]),
                phase_wall_s=float(seen["phase_wall_s"]),
                process_cpu_s=child.cpu_s,
                process_wall_s=child.wall_s,
            )
        )
        print(f"run {repeat + 1}: {runs[-1].us_per_request:.1f} µs/request", file=sys.stderr)
    return runs


def format_table(members: int, runs: Sequence[Overhead]) -> str:
    """The runs and their medians, as a table."""
    header = (
        f"{'run':>6} {'requests':>9} {'phase cpu s':>12} {'cpu µs/req':>11} "
        f"{'process cpu s':>14} {'process wall s':>15}"
    )
    lines = [f"the pipeline's own CPU, {members} members, instant transport", header]
    for number, run in enumerate(runs, 1):
        lines.append(_row(str(number), run.requests, run))
    median = Overhead(
        returncode=0,
        requests=int(statistics.median(r.requests for r in runs)),
        phase_cpu_s=statistics.median(r.phase_cpu_s for r in runs),
        phase_wall_s=statistics.median(r.phase_wall_s for r in runs),
        process_cpu_s=statistics.median(r.process_cpu_s for r in runs),
        process_wall_s=statistics.median(r.process_wall_s for r in runs),
    )
    lines.append(_row("median", median.requests, median))
    return "\n".join(lines)


def _row(label: str, requests: int, run: Overhead) -> str:
    return (
        f"{label:>6} {requests:>9} {run.phase_cpu_s:>12.2f} {run.us_per_request:>11.1f} "
        f"{run.process_cpu_s:>14.2f} {run.process_wall_s:>15.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write the figures as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        return _child(Path(args[1]), args[3:])  # --child FIGURES -- <offerflow run arguments>
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--members", type=int, default=100_000, help="default 100000")
    parser.add_argument("--repeats", type=int, default=3, help="runs (default 3)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "overhead.json", help="results file"
    )
    options = parser.parse_args(args)
    if options.members < 1 or options.repeats < 1:
        parser.error("--members and --repeats must be at least 1")
    runs = measure_overhead(options.members, repeats=options.repeats)
    options.out.write_bytes(
        orjson.dumps(
            {"members": options.members, "runs": [asdict(run) for run in runs]},
            option=orjson.OPT_INDENT_2,
        )
    )
    print(format_table(options.members, runs))
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
