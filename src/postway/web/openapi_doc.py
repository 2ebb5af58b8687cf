"""The OpenAPI document, made to say what the app really answers.

FastAPI documents a 422 for every route with parameters, but the app answers refused input
with 400 and the `{"error": ...}` shape (see `app.on_invalid`). The document is corrected
once, when first asked for: 422 becomes 400, every authenticated operation can answer 401,
every operation with a body can answer 413, and all of them use `ErrorOut`. Routes add the
codes only they answer (403, 404, 409) with `error_responses`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from postway.web.schemas import ErrorOut

ERROR_WORDS = {
    400: "Refused input; `field` names what to fix",
    401: "Missing, unknown or revoked API token",
    403: "Needs an administrator of the organisation",
    404: "No such object (or it belongs to someone else)",
    409: "Clashes with the current state",
    413: "Request body over the size limit",
    429: "Over a rate limit; `Retry-After` says when to retry",
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these error codes, each with the error shape."""
    return {code: {"model": ErrorOut, "description": ERROR_WORDS[code]} for code in codes}


def document_api(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _true_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _true_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, definition in _error_schemas().items():
        schemas.setdefault(name, definition)
    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            responses = op.setdefault("responses", {})
            codes = set()
            if responses.pop("422", None) is not None:
                codes.add(400)
            if op.get("security"):
                codes.add(401)
            if "requestBody" in op:
                codes.add(413)
            for code in sorted(codes):
                responses.setdefault(
                    str(code),
                    {
                        "description": ERROR_WORDS[code],
                        "content": {"application/json": {"schema": ERROR_REF}},
                    },
                )
    # nothing refers to FastAPI's 422 shapes any more
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _error_schemas() -> dict[str, Any]:
    full = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = full.pop("$defs", {})
    return {"ErrorOut": full, **defs}
