"""A fault-injecting stand-in for the bundled model endpoints, run as a child process.

``python -m tests.faults.server --port 0 --plan PLAN.json --log REQUESTS.jsonl [--seed N]``
serves the routes of :mod:`offerflow.serving.app` with the same normal answers, injects the faults
its plan (:mod:`tests.faults.plan`) draws for each request, appends one JSON line per request to
the log, and prints ``fault server on http://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from offerflow.serving.prediction import (
    Features,
    Prediction,
    assign_offer,
    predict_ats,
    predict_resp,
)
from tests.faults.plan import ATTEMPT_HEADER, MEMBER_HEADER, REQUEST_ID_HEADER, Plan, Rule
from tests.faults.process import READY_PREFIX

__all__ = ["FaultService", "main", "serve"]

# How long a SIGTERM waits for in-flight requests (hung ones never finish) before cancelling them.
_SHUTDOWN_S = 0.25
_JSON = "application/json"

Answer = Callable[[bytes], web.Response]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_M = TypeVar("_M", bound=BaseModel)


class FaultService:
    """The request handlers: log each request, then inject its fault or answer normally."""

    def __init__(self, plan: Plan, log: IO[bytes]) -> None:
        self._plan = plan
        self._log = log

    def app(self) -> web.Application:
        """Return the aiohttp application with the bundled app's routes."""
        app = web.Application(middlewares=[self._record_unrouted])
        app.router.add_get("/", self._ping)
        app.router.add_post("/ml/ats/predict", self._ats)
        app.router.add_post("/ml/resp/predict", self._resp)
        app.router.add_post("/offer/assign", self._offer)
        return app

    @web.middleware
    async def _record_unrouted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the requests no route takes (404, 405) too; the routes record their own."""
        if request.match_info.http_exception is not None:
            self._record(request, None)
        return await handler(request)

    async def _ping(self, request: web.Request) -> web.Response:
        self._record(request, None)
        return _json({"msg": "pong"})

    async def _ats(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "prediction", _ats_answer)

    async def _resp(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "prediction", _resp_answer)

    async def _offer(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "offer", _offer_answer)

    async def _serve(self, request: web.Request, field: str, answer: Answer) -> web.StreamResponse:
        """Draw the request's fault, record the request, and answer it."""
        member, attempt = _caller(request)
        rule = self._plan.choose(request.path, member, attempt)
        self._record(request, rule)
        body = await request.read()
        if rule is None:
            return answer(body)
        return await _inject(rule, request, field, lambda: answer(body))

    def _record(self, request: web.Request, rule: Rule | None) -> None:
        """Append one line to the request log, in one write, so a kill never leaves half a line."""
        member, attempt = _caller(request)
        entry = {
            "t": time.time(),
            "path": request.path,
            "member": member,
            "attempt": attempt,
            "request_id": request.headers.get(REQUEST_ID_HEADER),
            "fault": None if rule is None else rule.fault,
        }
        self._log.write(orjson.dumps(entry) + b"\n")


async def _inject(
    rule: Rule, request: web.Request, field: str, normal: Callable[[], web.Response]
) -> web.StreamResponse:
    """Answer (or not) as the rule's fault says."""
    match rule.fault:
        case "status":
            assert rule.code is not None
            headers = {} if rule.retry_after is None else {"Retry-After": rule.retry_after}
            detail = {"detail": f"injected fault: status {rule.code}"}
            return _json(detail, status=rule.code, headers=headers)
        case "slow":
            assert rule.delay_s is not None
            await asyncio.sleep(rule.delay_s)
            return normal()
        case "hang":
            await _forever()
        case "reset":
            _reset(request)
            await _forever()
        case "truncate":
            return await _truncate(request, field)
        case "malformed":
            return _raw(f'{{"{field}": '.encode())
        case "wrong_schema":
            return _raw(b'{"unexpected": 1}')
        case "nan":
            return _raw(f'{{"{field}": NaN}}'.encode())
        case "huge":
            return _raw(_huge_body(field, rule.size_bytes))


async def _forever() -> NoReturn:
    """Never return: the handler ends when the client goes away or the server stops."""
    await asyncio.Event().wait()
    raise AssertionError("an event nobody sets was set")


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP reset, answering nothing."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN, as a crashed peer or a middlebox would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _truncate(request: web.Request, field: str) -> web.StreamResponse:
    """Promise a body longer than the bytes sent, send part of it, and close the connection."""
    body = f'{{"{field}": 1.0, "pad": "{"x" * 64}"}}'.encode()
    response = web.StreamResponse(headers={"Content-Type": _JSON})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    transport = request.transport
    assert transport is not None
    # close() flushes what was written, then ends the connection short of Content-Length.
    transport.close()
    await _forever()


def _huge_body(field: str, size: int) -> bytes:
    """Return a valid JSON answer of exactly ``size`` bytes, padded by a long string."""
    value = '"OFFER_1"' if field == "offer" else "1.0"
    head, tail = f'{{"{field}": {value}, "pad": "', '"}'
    return (head + "x" * (size - len(head) - len(tail)) + tail).encode()


def _caller(request: web.Request) -> tuple[str | None, int | None]:
    """The member and attempt of a request's headers; a garbled attempt counts as absent."""
    member, attempt = request.headers.get(MEMBER_HEADER), request.headers.get(ATTEMPT_HEADER)
    try:
        return member, None if attempt is None else int(attempt)
    except ValueError:
        return member, None


def _json(
    content: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response rendered by orjson."""
    return web.Response(
        body=orjson.dumps(content), status=status, headers=headers, content_type=_JSON
    )


def _raw(body: bytes) -> web.Response:
    """A 200 that claims to be JSON, whatever the body is."""
    return web.Response(body=body, content_type=_JSON)


def _invalid(errors: Sequence[Any]) -> web.Response:
    """Answer 422 with validation errors, as the bundled app does."""
    return _json({"detail": list(errors)}, status=422)


def _validation_errors(exc: ValidationError) -> list[Any]:
    """The errors of a refused body, without inputs that JSON may not carry (NaN)."""
    return exc.errors(include_url=False, include_context=False, include_input=False)


def _parse(model: type[_M], body: bytes) -> _M | web.Response:
    """Validate a body, or return the 422 answer refusing it."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return _invalid(_validation_errors(exc))


def _prediction(value: float) -> web.Response:
    """A model answer, or 422 where the formula is not finite, as the bundled app does."""
    if not math.isfinite(value):
        return _invalid([{"msg": "the prediction is not finite for these features"}])
    return _json({"prediction": value})


def _ats_answer(body: bytes) -> web.Response:
    features = _parse(Features, body)
    if isinstance(features, web.Response):
        return features
    return _prediction(predict_ats(features))


def _resp_answer(body: bytes) -> web.Response:
    features = _parse(Features, body)
    if isinstance(features, web.Response):
        return features
    try:
        return _prediction(predict_resp(features))
    except ZeroDivisionError:
        return _prediction(math.nan)


def _offer_answer(body: bytes) -> web.Response:
    prediction = _parse(Prediction, body)
    if isinstance(prediction, web.Response):
        return prediction
    return _json({"offer": assign_offer(prediction)})


def _bind(host: str, port: int) -> socket.socket:
    """Bind a TCP socket that a restart on the same port can bind again right away."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(host: str, port: int, plan: Plan, log_path: Path) -> None:
    """Serve until SIGTERM or SIGINT; print the ready line once connections are accepted."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Unbuffered: each line is one write(2) on an O_APPEND file, complete even after a SIGKILL.
    with log_path.open("ab", buffering=0) as log, _bind(host, port) as sock:
        # Cancelling a handler whose client left ends hung requests with their connections.
        runner = web.AppRunner(
            FaultService(plan, log).app(),
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_S,
            access_log=None,
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            bound: int = sock.getsockname()[1]
            url_host = f"[{host}]" if ":" in host else host
            print(f"{READY_PREFIX}http://{url_host}:{bound}", flush=True)
            await stopping.wait()
        finally:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--plan", type=Path, required=True, help="the fault plan, JSON")
    parser.add_argument("--log", type=Path, required=True, help="appends one JSON line a request")
    parser.add_argument("--seed", type=int, default=None, help="overrides the plan's seed")
    args = parser.parse_args(argv)
    try:
        plan = Plan.model_validate_json(args.plan.read_bytes())
    except (OSError, ValidationError) as exc:
        print(f"fault server: bad plan {args.plan}: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        plan = plan.model_copy(update={"seed": args.seed})
    try:
        asyncio.run(serve(args.host, args.port, plan, args.log))
    except OSError as exc:
        print(f"fault server: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
