"""POST /api/v1/messages without the framework's routing and dependency machinery.

A CRM sends one message per request, thousands a second; FastAPI's route matching and
dependency solving cost more CPU than storing the message. This lane sits inside the
security headers and the body limit (whose gate has already authenticated the caller) and
answers a well-formed JSON send itself, through the same `send_one` the documented route
calls. Anything else, including a body that does not validate, goes on to the framework with
the body replayed, so every error is the framework's own answer.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postway.delivery.submit import (
    Accepted,
    AttachmentIn,
    SendRequest,
    build_prepared,
    load_context,
)
from postway.domain.states import DeliveryState
from postway.errors import PostwayError
from postway.runtime import Runtime
from postway.store.outage import OUTAGE_ERRORS, is_outage, unavailable
from postway.web.deps import SENDER_KEY, Sender, error_response
from postway.web.fast_json import FastJSON
from postway.web.schemas import SendIn

log = logging.getLogger("postway.api")

SEND_PATH = "/api/v1/messages"
QUEUED = DeliveryState.QUEUED.value


def send_request(body: SendIn) -> SendRequest:
    return SendRequest(
        identity_id=body.identity_id,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=[AttachmentIn(**a.model_dump()) for a in body.attachments],
    )


def accepted_json(a: Accepted) -> dict[str, Any]:
    return {
        "id": a.id,
        "message_id_header": a.message_id_header,
        "deliveries": [{"id": d, "recipient": r, "state": QUEUED} for d, r in a.deliveries],
    }


async def send_one(rt: Runtime, who: Sender, body: SendIn) -> Response:
    """Check, build and store one message; 202 once it is committed."""
    key = (who.principal.user_id, body.identity_id)
    ctx = rt.send_cache.contexts.get(key)
    if ctx is None:
        async with rt.db.reader() as s, s.begin():
            ctx = await load_context(s, who.principal, body.identity_id)
        rt.send_cache.contexts.put(key, ctx)
    req = send_request(body)
    accepted = await rt.group_commit.submit(
        who.token_hash, who.owner, ctx, req, build_prepared(ctx, rt.settings, req)
    )
    # committed: from here on the message is durable
    rt.wake_worker()
    return FastJSON(accepted_json(accepted), status_code=202)


def _json_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class SendLane:
    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != SEND_PATH
            or scope["method"] != "POST"
            or not isinstance(scope.get(SENDER_KEY), Sender)
            or not _json_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away (or over the limit)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = SendIn.model_validate_json(raw)
        except ValidationError:
            await self.app(scope, _replay(raw, receive), send)
            return
        try:
            response = await send_one(self.rt, scope[SENDER_KEY], body)
        except PostwayError as exc:
            response = error_response(exc)
        except OUTAGE_ERRORS as exc:
            if not is_outage(exc):
                raise
            response = error_response(unavailable())
        await response(scope, receive, send)


def _replay(raw: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return again
