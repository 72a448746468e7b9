"""The bare-requests floor: the pipeline's HTTP calls and nothing else, timed from inside.

``python -m bench.floor --base-url URL --bodies FILE --concurrency K`` loads request bodies
prepared by the harness (see :mod:`bench.bodies`), then, on one aiohttp session whose
TCPConnector allows K connections per endpoint (3K) as the pipeline's does, fires for every
member the model requests concurrently, then the offer request, with at most K requests in
flight per endpoint. No features, no DAG, no validation beyond the status code, no files written. It
prints one JSON object: the wall and CPU time of the request phase only, and what it sent.
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

import aiohttp
import orjson

from bench.bodies import Bodies, read_bodies

__all__ = ["Tally", "connections", "fire", "main"]

# The same default headers as the pipeline's client session, and no User-Agent either.
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# The pipeline's per-attempt timeout and connect timeout of the default partner.
_TIMEOUT = aiohttp.ClientTimeout(total=10.0, sock_connect=5.0)


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
    connector = aiohttp.TCPConnector(limit=connections(bodies, concurrency), ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        headers=_JSON_HEADERS,
        skip_auto_headers=("User-Agent",),
        timeout=_TIMEOUT,
    ) as session:

        async def post(name: str, body: bytes, headers: dict[str, str]) -> None:
            async with limits[name]:
                try:
                    async with session.post(urls[name], data=body, headers=headers) as answer:
                        await answer.read()
                        if answer.status != 200:
                            tally.errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    tally.errors += 1
            tally.requests += 1

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            # One shared iterator: a worker takes the next member as soon as it is free.
            for member_id, features, offer in members:
                headers = {"X-Offerflow-Member": member_id, "X-Offerflow-Attempt": "1"}
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


def connections(bodies: Bodies, concurrency: int) -> int:
    """The connection pool's size: K per endpoint, as the pipeline's client sizes it."""
    return len(bodies.paths) * concurrency


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
        "connections": connections(bodies, args.concurrency),
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
