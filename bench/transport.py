"""``python -m bench.transport``: the project's HTTP transport against aiohttp and pyreqwest.

One bundled model server for the whole comparison. Each client runs ``python -m bench.clients``
in a child process of its own (a fresh interpreter): the same N POSTs of the same body to the
same URL, at most K in flight. First a warm-up run of each client (recorded, not counted), then
``--repeats`` rounds with the clients alternated within each (A B C A B C …). A run is measured
from outside (the whole child's wall and CPU, :mod:`bench.children`) and from inside (the
request phase's wall and CPU). The table shows each client's medians and its CPU per request
over the project's transport's in the same round. See bench/README.md, "The transport
comparison".
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import offerflow
from bench.children import Measured, measure
from bench.clients import CLIENTS, REQUIRES
from bench.report import machine, speed_line, speed_probe, write_results
from bench.workload import REPO
from offerflow.serving import BundledServer

__all__ = ["ClientRun", "format_table", "main", "summarize"]

#: the route every request goes to: the ATS model of the bundled server
PATH = "/ml/ats/predict"
#: the client every ratio is taken against
REFERENCE = "own"
_WARMUP_REQUESTS = 2_000


@dataclass(frozen=True, slots=True)
class ClientRun:
    """One child: the process as measured from outside, and its request phase from inside."""

    client: str
    process: Measured
    #: the request phase: from the first request to the last answer
    wall_s: float
    #: the request phase's CPU, every thread (time.process_time in the child)
    cpu_s: float
    requests: int
    #: answers with status 200
    ok: int
    first_error: str | None

    @property
    def failed(self) -> int:
        """Requests without a 200 answer."""
        return self.requests - self.ok

    def figures(self) -> dict[str, float]:
        """The run's figures; per request and per second count 200 answers only."""
        return {
            "wall_s": self.wall_s,
            "requests_per_s": self.ok / self.wall_s if self.wall_s > 0 else float("nan"),
            "cpu_us_per_request": _per_request(self.cpu_s, self.ok),
            "child_cpu_us_per_request": _per_request(self.process.cpu_s, self.ok),
            # interpreter start, imports, opening and closing the client, exit
            "child_cpu_s_outside_phase": self.process.cpu_s - self.cpu_s,
            "child_wall_s": self.process.wall_s,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything about the run, for the results file."""
        return {
            "process": self.process.as_dict(),
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "first_error": self.first_error,
            "figures": {key: round(value, 4) for key, value in self.figures().items()},
        }


def _per_request(cpu_s: float, answers: int) -> float:
    return cpu_s / answers * 1e6 if answers else float("nan")


def run_client(client: str, url: str, *, requests: int, concurrency: int) -> ClientRun:
    """Run one client's child to completion and read its figures."""
    argv = [
        sys.executable,
        "-m",
        "bench.clients",
        client,
        "--url",
        url,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
    ]
    process = measure(argv, cwd=REPO)
    report = json.loads(process.stdout)
    return ClientRun(
        client=client,
        process=process,
        wall_s=float(report["wall_s"]),
        cpu_s=float(report["cpu_s"]),
        requests=int(report["requests"]),
        ok=int(report["ok"]),
        first_error=report["first_error"],
    )


def summarize(
    rounds: Sequence[Mapping[str, ClientRun]], *, reference: str = REFERENCE
) -> dict[str, dict[str, float]]:
    """Per client, the median of each figure over the rounds, and of its ratios to ``reference``.

    A ratio is taken within a round, against the reference's run of that round, before the
    median: runs made close in time are compared with each other.
    """
    summary: dict[str, dict[str, float]] = {}
    for client in rounds[0]:
        per_round = []
        for round_ in rounds:
            figures = round_[client].figures()
            base = round_[reference].figures()
            figures["cpu_ratio"] = figures["cpu_us_per_request"] / base["cpu_us_per_request"]
            figures["child_cpu_ratio"] = (
                figures["child_cpu_us_per_request"] / base["child_cpu_us_per_request"]
            )
            per_round.append(figures)
        summary[client] = {
            key: round(statistics.median(figures[key] for figures in per_round), 4)
            for key in per_round[0]
        }
    return summary


def format_table(
    summary: Mapping[str, Mapping[str, float]],
    failed: Mapping[str, int],
    versions: Mapping[str, str],
) -> list[str]:
    """The medians as a plain-text table, one row per client."""
    header = [
        "client",
        "version",
        "failed",
        "wall_s",
        "req/s",
        "cpu_us/req(phase)",
        "ratio(phase)",
        "cpu_us/req(child)",
        "ratio(child)",
        "cpu_s(outside)",
    ]
    rows = [header]
    for client, m in summary.items():
        rows.append(
            [
                client,
                versions[client],
                str(failed[client]),
                f"{m['wall_s']:.3f}",
                f"{m['requests_per_s']:.0f}",
                f"{m['cpu_us_per_request']:.1f}",
                f"{m['cpu_ratio']:.2f}",
                f"{m['child_cpu_us_per_request']:.1f}",
                f"{m['child_cpu_ratio']:.2f}",
                f"{m['child_cpu_s_outside_phase']:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _version(client: str) -> str:
    if client == REFERENCE:
        return f"{offerflow.__version__} (httptools {metadata.version('httptools')})"
    return metadata.version(REQUIRES[client])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transport",
        description="The project's HTTP transport against aiohttp and pyreqwest: "
        "the same POSTs against the same server, each client in a child process of its own.",
    )
    parser.add_argument("--requests", type=_positive, default=20_000, help="POSTs per run")
    parser.add_argument("--concurrency", type=_positive, default=32, help="requests in flight")
    parser.add_argument(
        "--server-workers", type=_positive, default=2, help="uvicorn workers of the model server"
    )
    parser.add_argument("--repeats", type=_positive, default=3, help="rounds of every client")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "transport.json", help="results file"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _describe(run: ClientRun) -> str:
    line = (
        f"{run.client}: {run.wall_s:.2f} s, "
        f"{_per_request(run.cpu_s, run.ok):.1f} us CPU/request (phase)"
    )
    if run.failed:
        line += f", {run.failed} of {run.requests} failed (first: {run.first_error})"
    return line


def _available() -> tuple[list[str], dict[str, str]]:
    """The clients whose library is installed, and why each of the others is skipped."""
    clients, skipped = [], {}
    for client in CLIENTS:
        if importlib.util.find_spec(REQUIRES[client]) is None:
            skipped[client] = f"{REQUIRES[client]} is not installed"
            _progress(
                f"{client}: skipped, {skipped[client]} (pip install -e '.[bench]', "
                "as make bench-transport does)"
            )
        else:
            clients.append(client)
    return clients, skipped


def _rounds(
    clients: Sequence[str], url: str, args: argparse.Namespace, results: dict[str, Any]
) -> list[dict[str, ClientRun]]:
    """A warm-up run of each client, then the rounds, A B C A B C …; each into ``results``."""
    for client in clients:
        requests = min(args.requests, _WARMUP_REQUESTS)
        warmup = run_client(client, url, requests=requests, concurrency=args.concurrency)
        results["warmup"][client] = warmup.as_dict()
        _progress(f"warm-up {_describe(warmup)}")
    rounds: list[dict[str, ClientRun]] = []
    for index in range(1, args.repeats + 1):
        round_ = {}
        for client in clients:
            run = run_client(client, url, requests=args.requests, concurrency=args.concurrency)
            round_[client] = run
            _progress(f"round {index}/{args.repeats}: {_describe(run)}")
        rounds.append(round_)
        results["rounds"].append({client: run.as_dict() for client, run in round_.items()})
        write_results(args.out, results)
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print the table; write the results file. 1 when requests failed."""
    args = _parser().parse_args(argv)
    facts = machine()
    clients, skipped = _available()
    versions = {client: _version(client) for client in clients}
    results: dict[str, Any] = {
        "machine": facts,
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "server_workers": args.server_workers,
            "repeats": args.repeats,
            "path": PATH,
        },
        "clients": versions,
        "skipped": skipped,
        "warmup": {},
        "rounds": [],
    }
    # as the harness does: an editable install under PYTHONDONTWRITEBYTECODE would otherwise
    # compile offerflow again in every child of the project's transport
    compileall.compile_dir(Path(offerflow.__file__).parent, quiet=1)
    _progress(f"starting the model server with {args.server_workers} workers")
    with BundledServer(workers=args.server_workers) as server:
        results["server"] = {"base_url": server.base_url, "workers": args.server_workers}
        rounds = _rounds(clients, server.base_url + PATH, args, results)

    # Other work on the machine shows here: compare with machine.load_avg_at_start.
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    facts["speed_probe_s_at_end"] = speed_probe()
    summary = summarize(rounds)
    failed = {client: sum(round_[client].failed for round_ in rounds) for client in clients}
    results["medians"] = summary
    write_results(args.out, results)

    lines = [
        f"offerflow transport comparison: {facts['usable_cores']} cores ({facts['cpu']}), "
        f"python {facts['python']}; {args.requests} POSTs of {PATH} per run, "
        f"{args.concurrency} in flight, server workers {args.server_workers}",
        "",
        *format_table(summary, failed, versions),
        f"medians of {args.repeats} round(s), clients alternated; ratios to {REFERENCE} within "
        "each round; per request and req/s count 200 answers only",
    ]
    lines += [f"{client}: skipped, {reason}" for client, reason in skipped.items()]
    lines += [
        f"{client}: {count} of {args.requests * args.repeats} requests failed (first: "
        f"{next(r[client].first_error for r in rounds if r[client].failed)})"
        for client, count in failed.items()
        if count
    ]
    lines.append(
        f"load average at the start {facts['load_avg_at_start']}, "
        f"at the end {results['load_avg_at_end']}"
    )
    lines += speed_line(facts)
    print("\n".join(lines))
    _progress(f"results in {args.out}")
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
