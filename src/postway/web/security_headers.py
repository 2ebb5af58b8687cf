"""Security headers on every response (pages, API, static files, errors), as pure ASGI
middleware so that answers made before any route runs (413 from `body_limit`, 404s) carry
them too.

Pages load only Postway's own CSS and JS: no inline script, no inline style, no framing.
The one exception is the interactive API documentation (/docs, /redoc), served only in demo
mode: FastAPI's Swagger UI and ReDoc pages load their code from a CDN and start it with an
inline script, so those two paths get a policy of their own that allows exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " + _COMMON
)
_CDN = "https://cdn.jsdelivr.net"
DOCS_POLICY = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_CDN}; "
    f"style-src 'self' 'unsafe-inline' {_CDN}; img-src 'self' data: https:; "
    f"worker-src 'self' blob:; connect-src 'self'; " + _COMMON
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

_FIXED: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),  # for browsers that predate frame-ancestors
)
_OURS = {b"content-security-policy", *(name for name, _ in _FIXED)}


class SecurityHeaders:
    """Adds the Content-Security-Policy, nosniff, Referrer-Policy and X-Frame-Options headers
    to every HTTP response, replacing any a route set (one policy, kept here)."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope.get("path") in self.docs_paths else PAGE_POLICY
        added = [(b"content-security-policy", policy.encode()), *_FIXED]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)
