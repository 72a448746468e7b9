"""The limit on a request's body: a 413 before a body past it is read whole.

The largest legitimate body is a batch of :data:`~offerflow.serving.catalog.MAX_BATCH` (10,000)
members: as json-batch or MLflow records, with every one of the 8 features a 24-character float,
it is 4.2 MB compact and 5.5 MB pretty-printed with an indent of 4 (the MLflow split and KServe
forms are smaller). :data:`MAX_BODY_BYTES` is 8 MiB, about 1.5 times that.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY_BYTES", "BodyLimit"]

#: the most bytes a request's body may have (see the module's docstring for why 8 MiB)
MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: answer 413, with a JSON error, to a body of more than ``max_bytes``.

    A request with a Content-Length is judged by it before any of its body is read, and then
    passes through untouched: the server never hands the app more than the length says, so the
    common case costs a look at the headers and nothing per message. A body without a length
    (chunked) is read here, counted as it comes, refused as soon as it passes the limit, and
    handed to the app whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection event: an HTTP request is let through or refused."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if chunked or (length is not None and not length.isdigit()):
            await self._read_counting(scope, receive, send)
        elif length is not None and int(length) > self.max_bytes:
            await self._refuse(send)
        else:
            await self.app(scope, receive, send)

    async def _read_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a body of unknown length up to the limit, then run the app with it."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is no one to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            {"detail": f"request body too large: the limit is {self.max_bytes} bytes"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # the rest of the body is not worth reading: the server closes instead
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
