"""The FastAPI application: JSON API, web pages, health and metrics."""

from __future__ import annotations

import hmac
import inspect
import json

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from postway import __version__
from postway.demo import DEMO_GOOGLE_PATH, demo_google
from postway.errors import PostwayError
from postway.runtime import Runtime
from postway.store.outage import OUTAGE_ERRORS, is_outage, unavailable
from postway.web import admin_pages, api, bounce_mailbox, gmail_connect, inbox_pages, pages
from postway.web.body_limit import BodyLimit
from postway.web.deps import api_gate, error_response
from postway.web.openapi_doc import document_api
from postway.web.security_headers import DOCS_PATHS, SecurityHeaders
from postway.web.send_lane import SendLane

LOOPBACK = {"127.0.0.1", "::1"}
# FastAPI's built-in OpenTelemetry hooks look for global providers on every request; Postway
# exports its own Prometheus metrics, so they are off on the versions that have them.
_NO_TELEMETRY: dict[str, object] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def create_app(rt: Runtime) -> FastAPI:
    # Swagger UI and ReDoc load their scripts from a CDN; outside the demo they are off and
    # /openapi.json is the document (any OpenAPI viewer can open it).
    demo = rt.inbox is not None
    app = FastAPI(
        **_NO_TELEMETRY,  # type: ignore[arg-type]
        title="Postway",
        version=__version__,
        description="Self-hosted delivery layer for sales email.",
        docs_url="/docs" if demo else None,
        redoc_url="/redoc" if demo else None,
    )
    app.state.runtime = rt
    # base64 inflates attachments by a third; allow for it plus JSON overhead
    body_limit = int(rt.settings.max_message_bytes * 1.4) + 1024 * 1024
    # outermost of the app's own layers: nothing reads a body before it is counted
    # innermost: sends that need no routing are answered here, after the gate and the limit
    app.add_middleware(SendLane, rt=rt)
    app.add_middleware(BodyLimit, limit=body_limit, gate=api_gate(rt))
    # added last, so outermost: even a 413 from BodyLimit carries the headers
    app.add_middleware(SecurityHeaders, docs_paths=DOCS_PATHS if demo else ())

    @app.exception_handler(PostwayError)
    async def on_error(request: Request, exc: PostwayError) -> Response:
        if request.url.path.startswith("/api/") or not isinstance(exc, PostwayError):
            return error_response(exc)
        return await pages.error_page(request, exc)

    async def on_database_error(request: Request, exc: Exception) -> Response:
        if not is_outage(exc):
            raise exc  # a bug: the server's own 500
        if request.url.path.startswith("/api/"):
            return error_response(unavailable())
        return await pages.error_page(request, unavailable())

    for kind in OUTAGE_ERRORS:
        app.add_exception_handler(kind, on_database_error)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # unknown routes, wrong methods, unreadable bodies: the same {"error": ...} shape
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            msg = f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip()
            return JSONResponse({"error": msg}, status_code=400)
        field = _field(tuple(first.get("loc", ())))
        msg = f"{field}: {first.get('msg', 'invalid value')}"
        if first.get("type") == "extra_forbidden":
            msg = f"{field}: unknown field"
        detail = [
            {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg")} for e in errors
        ]
        return JSONResponse(
            json.loads(json.dumps({"error": msg, "field": field, "errors": detail}, default=str)),
            status_code=400,
        )

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        token = rt.settings.metrics_token
        if token:
            supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            allowed = hmac.compare_digest(supplied, token)
        else:
            allowed = _direct_from_loopback(request)
        if not allowed:
            return JSONResponse({"error": "metrics need the metrics token"}, status_code=401)
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(bounce_mailbox.router)
    app.include_router(gmail_connect.router)
    app.include_router(pages.router)
    app.include_router(admin_pages.router)
    if rt.inbox is not None:
        app.include_router(inbox_pages.router)
        # demo only: a stand-in for Google, so connecting Gmail works offline (see demo.py)
        app.mount(DEMO_GOOGLE_PATH, demo_google(rt, gmail_connect.CALLBACK_PATH))
    document_api(app)
    return app


def _direct_from_loopback(request: Request) -> bool:
    """A client on this machine talking to us directly. The server never rewrites the client
    address from forwarding headers (`server.py` turns proxy headers off); a request that
    carries them came through a proxy, which makes every client look local, so it is not
    trusted however local its socket peer is."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    return request.client is not None and request.client.host in LOOPBACK
