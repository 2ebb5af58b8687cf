"""Request bodies bounded as bytes arrive, and a gate that may answer before any is read.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer): it counts
the bytes of every `http.request` message, so a chunked body with no Content-Length is held
to the same limit as a declared one. When the limit is passed the answer is 413 at once, the
application is told the client went away, and the connection is closed without reading the
rest. The gate runs before the application sees the request: an API call without a valid
token is answered 401 while its body is still unread in the socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Gate = Callable[[Scope], Awaitable[Response | None]]
"""Called before the body is read; a response it returns is sent instead of the app's."""


def too_large(limit: int) -> JSONResponse:
    # Connection: close makes the server drop the unread rest of the body instead of
    # reading it to find the next request.
    return JSONResponse(
        {"error": f"request body over the limit of {limit} bytes"},
        status_code=413,
        headers={"Connection": "close"},
    )


class BodyLimit:
    """Answers 413 for bodies over `limit` bytes, counted as they stream."""

    def __init__(self, app: ASGIApp, limit: int, gate: Gate | None = None) -> None:
        self.app = app
        self.limit = limit
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await too_large(self.limit)(scope, receive, send)
            return
        if self.gate is not None:
            refusal = await self.gate(scope)
            if refusal is not None:
                refusal.headers["Connection"] = "close"  # the body stays unread
                await refusal(scope, receive, send)
                return
        await _Exchange(self, scope, receive, send).run()


class _Exchange:
    """One request: counts its body and decides who answers (the app, or us with 413)."""

    def __init__(self, owner: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.owner = owner
        self.scope = scope
        self._receive = receive
        self._send = send
        self.seen = 0
        self.started = False  # the app began its response
        self.answered = False  # we sent 413; everything the app sends is dropped

    async def run(self) -> None:
        await self.owner.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.answered:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.owner.limit:
                if not self.started:
                    self.answered = True
                    await too_large(self.owner.limit)(self.scope, self._receive, self._send)
                # what the app sees is a client that went away mid-body
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
