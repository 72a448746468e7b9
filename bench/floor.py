"""The bare-requests floor: the pipeline's HTTP calls and nothing else, timed from inside.

``python -m bench.floor --base-url URL --bodies FILE --concurrency K`` loads request bodies
prepared by the harness (see :mod:`bench.bodies`), then, with the pipeline's HTTP transport
(:mod:`offerflow.pipeline.endpoints.transport`: the same keep-alive pools, the same headers,
the same per-request timeout), fires for every member the model requests concurrently, then
the offer request, with at most K requests in flight per endpoint. No features, no DAG, no
validation beyond the status code, no files written. It prints one JSON object: the wall and
CPU time of the request phase only, and what it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.bodies import Bodies, read_bodies
from offerflow.pipeline.endpoints.transport import HttpClient, header_lines, header_value

__all__ = ["Tally", "fire", "main"]

# The same fixed headers as the pipeline's client sends.
_JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))
# The pipeline's per-attempt timeout and connect timeout of the default partner.
_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Tally:
    """What the request phase did."""

    requests: int = 0
    errors: int = 0


async def fire(base_url: str, bodies: Bodies, concurrency: int) -> Tally:
    """Send every member's requests; at most ``concurrency`` in flight per endpoint."""
    tally = Tally()
    base = base_url.rstrip("/")
    urls = {name: base + path for name, path in bodies.paths.items()}
    limits = {name: asyncio.Semaphore(concurrency) for name in urls}
    *side_models, last_model = bodies.models
    members: Iterator[tuple[str, bytes, bytes]] = iter(bodies.members)
    async with HttpClient(connect_timeout_s=_CONNECT_TIMEOUT_S) as http:
        routes = {
            name: http.route(url, headers=header_lines(_JSON_HEADERS)) for name, url in urls.items()
        }

        async def post(name: str, body: bytes, headers: bytes) -> None:
            async with limits[name]:
                try:
                    answer = await routes[name].send(body, timeout_s=_TIMEOUT_S, headers=headers)
                    if answer.status != 200:
                        tally.errors += 1
                except OSError:  # TimeoutError, ConnectionError
                    tally.errors += 1
            tally.requests += 1

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            # One shared iterator: a worker takes the next member as soon as it is free.
            for member_id, features, offer in members:
                headers = b"X-Offerflow-Member: %b\r\nX-Offerflow-Attempt: 1\r\n" % (
                    header_value(member_id)
                )
                # The models concurrently (one task per extra model, the last one awaited
                # inline), then the offer with both predictions.
                others = [loop.create_task(post(m, features, headers)) for m in side_models]
                await post(last_model, features, headers)
                for other in others:
                    await other
                await post(bodies.offer, offer, headers)

        # Enough workers that every endpoint can keep its K requests in flight at once.
        async with asyncio.TaskGroup() as group:
            for _ in range(len(urls) * concurrency):
                group.create_task(worker())
    return tally


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _cpu_s() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    """Load the bodies, time the request phase, print its figures as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--base-url", required=True, help="the model server, http://HOST:PORT")
    parser.add_argument("--bodies", type=Path, required=True, help="written by bench.bodies")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight per endpoint")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")

    bodies = read_bodies(args.bodies)  # before the clock starts
    user0, sys0 = _cpu_s()
    started = time.perf_counter()
    # the same event loop as `offerflow run`: uvloop when it is installed
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        tally = runner.run(fire(args.base_url, bodies, args.concurrency))
    wall_s = time.perf_counter() - started
    user1, sys1 = _cpu_s()
    report = {
        "wall_s": round(wall_s, 4),
        "cpu_s": round(user1 - user0 + sys1 - sys0, 4),
        "user_s": round(user1 - user0, 4),
        "sys_s": round(sys1 - sys0, 4),
        "requests": tally.requests,
        "errors": tally.errors,
        "members": len(bodies.members),
        "concurrency": args.concurrency,
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
