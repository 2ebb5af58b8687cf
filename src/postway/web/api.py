"""The REST API under /api/v1. Every route is authenticated and scoped to its caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import select

from postway.delivery.queue_admin import get_delivery, retry_now
from postway.delivery.submit import (
    accept_messages,
)
from postway.domain.channel_guide import explain
from postway.domain.states import ChannelName
from postway.domain.throttle import parse_limits
from postway.errors import InvalidInput, NotFound
from postway.store import channel_settings as cs
from postway.store import identities as ids
from postway.store import messages as msgs
from postway.store import users
from postway.store.models import Organisation, Suppression, utcnow
from postway.store.org_rules import clean_domains, set_blocked_domains
from postway.web import verification
from postway.web.channel_choice import check_relay, current_channel, save_channel
from postway.web.deps import Admin, Caller, RuntimeDep, SendCaller
from postway.web.fast_json import FastJSON
from postway.web.gmail_view import from_by_channel, gmail_account_out
from postway.web.openapi_doc import error_responses
from postway.web.schemas import (
    AcceptedOut,
    BlockedDomainsIn,
    ChannelIn,
    ChannelOut,
    ConversationOut,
    DeliveryOut,
    ErrorOut,
    EventOut,
    IdentityIn,
    IdentityOut,
    IdentityPatch,
    MessageOut,
    Page,
    RelayTestOut,
    SendBatchIn,
    SendIn,
    SmtpIn,
    SuppressionOut,
    ThrottleIO,
)
from postway.web.send_lane import accepted_json, send_one, send_request

router = APIRouter(prefix="/api/v1")
Limit = Query(50, ge=1, le=500)
# past this an offset is an attack or a typo, and the database would overflow on it
Offset = Query(0, ge=0, le=1_000_000_000)


RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": "Over a rate limit; `Retry-After` says when to retry"}
}


def _next(offset: int, limit: int, total: int) -> int | None:
    return offset + limit if offset + limit < total else None


# --- identities ---------------------------------------------------------------------------


@router.get("/identities", response_model=list[IdentityOut])
async def list_identities(who: Caller, rt: RuntimeDep) -> list[IdentityOut]:
    async with rt.db.session() as s, s.begin():
        return [IdentityOut.of(r) for r in await ids.list_identities(s, who)]


@router.post(
    "/identities", response_model=IdentityOut, status_code=201, responses=error_responses(409)
)
async def create_identity(body: IdentityIn, who: Caller, rt: RuntimeDep) -> IdentityOut:
    async with rt.db.session() as s, s.begin():
        row = await ids.create_identity(s, who, **body.model_dump())
    return IdentityOut.of(row)


@router.get("/identities/{identity_id}", response_model=IdentityOut, responses=error_responses(404))
async def get_identity(identity_id: str, who: Caller, rt: RuntimeDep) -> IdentityOut:
    """One identity, with `effective_from`: the address recipients see on each channel."""
    async with rt.db.session() as s, s.begin():
        row = await ids.get_identity(s, who, identity_id)
        out = IdentityOut.of(row)
        out.effective_from = await from_by_channel(s, row)
    return out


@router.patch(
    "/identities/{identity_id}", response_model=IdentityOut, responses=error_responses(404, 409)
)
async def patch_identity(
    identity_id: str, body: IdentityPatch, who: Caller, rt: RuntimeDep
) -> IdentityOut:
    async with rt.db.session() as s, s.begin():
        row = await ids.update_identity(s, who, identity_id, body.model_dump(exclude_unset=True))
    return IdentityOut.of(row)


@router.delete("/identities/{identity_id}", status_code=204, responses=error_responses(404))
async def delete_identity(identity_id: str, who: Caller, rt: RuntimeDep) -> Response:
    async with rt.db.session() as s, s.begin():
        await ids.delete_identity(s, who, identity_id)
    return Response(status_code=204)


@router.post(
    "/identities/{identity_id}/verify",
    status_code=202,
    responses={**error_responses(404, 409), **RATE_LIMITED},
)
async def send_verification(identity_id: str, who: Caller, rt: RuntimeDep) -> dict[str, str]:
    """Mail a confirmation link to the identity's address (through Postway's own servers)."""
    row = await verification.send_verification(rt, who, identity_id)
    return {"status": "sent", "email": row.email}


# --- delivery channel -----------------------------------------------------------------------


async def _channel_view(rt: RuntimeDep, who: Caller) -> ChannelOut:
    view = await current_channel(rt, who)
    gmail = await gmail_account_out(rt, who)
    return ChannelOut.of(view.setting, view.source, explain(view.channel), gmail)


@router.get("/delivery-channel", response_model=ChannelOut)
async def get_channel(who: Caller, rt: RuntimeDep) -> ChannelOut:
    return await _channel_view(rt, who)


@router.put("/delivery-channel", response_model=ChannelOut, responses=error_responses(409))
async def put_channel(body: ChannelIn, who: Caller, rt: RuntimeDep) -> ChannelOut:
    smtp = body.smtp.model_dump() if body.smtp else None
    await save_channel(rt, who.org_id, who.user_id, body.channel, smtp)
    return await _channel_view(rt, who)


@router.put(
    "/team/delivery-channel", response_model=ChannelOut, responses=error_responses(403, 409)
)
async def put_team_channel(body: ChannelIn, who: Admin, rt: RuntimeDep) -> ChannelOut:
    """The organisation's team channel, used by members who have not chosen their own."""
    await save_channel(
        rt, who.org_id, None, body.channel, body.smtp.model_dump() if body.smtp else None
    )
    async with rt.db.session() as s, s.begin():
        row = await cs.team_setting(s, who.org_id)
    name = ChannelName(row.channel) if row else ChannelName.MANAGED
    return ChannelOut.of(row, "team", explain(name))


@router.post("/delivery-channel/smtp/test", response_model=RelayTestOut)
async def test_relay(who: Caller, rt: RuntimeDep, body: SmtpIn | None = None) -> RelayTestOut:
    """Connect, negotiate TLS and authenticate; says which step failed, in words."""
    result = await check_relay(rt, who, body.model_dump() if body and body.host else None)
    return RelayTestOut(ok=result.ok, step=result.step, message=result.message)


# --- messages ------------------------------------------------------------------------------


@router.post(
    "/messages", response_model=AcceptedOut, status_code=202, responses=error_responses(404, 409)
)
async def send_message(body: SendIn, who: SendCaller, rt: RuntimeDep) -> Response:
    """Usually answered by `send_lane` before routing; the same `send_one` either way."""
    return await send_one(rt, who, body)


@router.post(
    "/messages/batch",
    response_model=list[AcceptedOut],
    status_code=202,
    responses=error_responses(404, 409),
)
async def send_batch(body: SendBatchIn, who: Caller, rt: RuntimeDep) -> Response:
    """Up to 500 messages in one request, accepted all together or not at all; an error
    names the message by its index (`messages[3].to[0]: ...`)."""
    done = await accept_messages(rt.db, rt.settings, who, [send_request(m) for m in body.messages])
    rt.wake_worker()
    return FastJSON([accepted_json(a) for a in done], status_code=202)


@router.get("/messages", response_model=Page)
async def list_messages(
    who: Caller, rt: RuntimeDep, limit: int = Limit, offset: int = Offset
) -> Page:
    async with rt.db.session() as s, s.begin():
        rows, total = await msgs.list_messages(s, who, limit, offset)
        by_message = await msgs.deliveries_of_many(s, [m.id for m in rows])
    items = [MessageOut.of(m, by_message.get(m.id, []), {}) for m in rows]
    return Page(items=items, total=total, next_offset=_next(offset, limit, total))


@router.get("/messages/{message_id}", response_model=MessageOut, responses=error_responses(404))
async def get_message(message_id: str, who: Caller, rt: RuntimeDep) -> MessageOut:
    async with rt.db.session() as s, s.begin():
        m = await msgs.get_message(s, who, message_id)
        deliveries = await msgs.deliveries_of(s, m.id)
        events = await msgs.events_of(s, [d.id for d in deliveries])
    return MessageOut.of(m, deliveries, events)


@router.get(
    "/messages/{message_id}/events", response_model=list[EventOut], responses=error_responses(404)
)
async def message_events(message_id: str, who: Caller, rt: RuntimeDep) -> list[EventOut]:
    async with rt.db.session() as s, s.begin():
        m = await msgs.get_message(s, who, message_id)
        deliveries = await msgs.deliveries_of(s, m.id)
        events = await msgs.events_of(s, [d.id for d in deliveries])
    flat = sorted((e for es in events.values() for e in es), key=lambda e: e.id)
    return [EventOut.of(e) for e in flat]


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    responses=error_responses(404, 409),
)
async def retry_delivery(delivery_id: str, who: Caller, rt: RuntimeDep) -> DeliveryOut:
    """Resend a failed or bounced recipient (e.g. after a quota pause), or try a waiting one now."""
    async with rt.db.session() as s, s.begin():
        d = await get_delivery(s, delivery_id, user_id=who.user_id)
        retry_now(s, d, rt.settings, who.email)
    rt.wake_worker()
    return DeliveryOut.of(d)


# --- conversations and failures -------------------------------------------------------------


@router.get("/conversations", response_model=Page)
async def list_conversations(
    who: Caller, rt: RuntimeDep, limit: int = Limit, offset: int = Offset
) -> Page:
    async with rt.db.session() as s, s.begin():
        rows, total = await msgs.conversations(s, who, limit, offset)
    items = [ConversationOut(**r) for r in rows]  # type: ignore[arg-type]
    return Page(items=items, total=total, next_offset=_next(offset, limit, total))


@router.get(
    "/conversations/{address}", response_model=list[DeliveryOut], responses=error_responses(404)
)
async def get_conversation(address: str, who: Caller, rt: RuntimeDep) -> list[DeliveryOut]:
    async with rt.db.session() as s, s.begin():
        rows = await msgs.conversation(s, who, address)
    return [DeliveryOut.of(d) for d, _ in rows]


@router.get("/failed-deliveries", response_model=Page)
async def list_failed(
    who: Caller, rt: RuntimeDep, limit: int = Limit, offset: int = Offset
) -> Page:
    async with rt.db.session() as s, s.begin():
        rows, total = await msgs.failed_deliveries(s, who, limit, offset)
    items = [{**DeliveryOut.of(d).model_dump(mode="json"), "subject": m.subject} for d, m in rows]
    return Page(items=items, total=total, next_offset=_next(offset, limit, total))


# --- organisation rules (admin) -------------------------------------------------------------


@router.get("/suppressions", response_model=list[SuppressionOut], responses=error_responses(403))
async def list_suppressions(who: Admin, rt: RuntimeDep) -> list[SuppressionOut]:
    async with rt.db.session() as s, s.begin():
        rows = await s.scalars(
            select(Suppression)
            .where(Suppression.org_id == who.org_id)
            .order_by(Suppression.created_at.desc())
        )
        return [
            SuppressionOut(
                address=r.address,
                reason=r.reason,
                created_at=r.created_at,
                source_delivery_id=r.source_delivery_id,
            )
            for r in rows
        ]


@router.delete("/suppressions/{address}", status_code=204, responses=error_responses(403, 404))
async def lift_suppression(address: str, who: Admin, rt: RuntimeDep) -> Response:
    async with rt.db.session() as s, s.begin():
        row = await s.scalar(
            select(Suppression).where(
                Suppression.org_id == who.org_id, Suppression.address == address.lower()
            )
        )
        if row is None:
            raise NotFound(f"{address} is not suppressed")
        await s.delete(row)
    return Response(status_code=204)


@router.get("/blocked-domains", response_model=BlockedDomainsIn)
async def get_blocked(who: Caller, rt: RuntimeDep) -> BlockedDomainsIn:
    async with rt.db.session() as s, s.begin():
        org = await s.get(Organisation, who.org_id)
        return BlockedDomainsIn(domains=list(org.blocked_domains or []) if org else [])


@router.put(
    "/blocked-domains", response_model=BlockedDomainsIn, responses=error_responses(403, 404)
)
async def put_blocked(body: BlockedDomainsIn, who: Admin, rt: RuntimeDep) -> BlockedDomainsIn:
    # the same checks as the admin page (org_rules), before any transaction
    cleaned = clean_domains(body.domains)
    async with rt.db.session() as s, s.begin():
        return BlockedDomainsIn(domains=await set_blocked_domains(s, who.org_id, cleaned))


@router.get("/throttle", response_model=ThrottleIO)
async def get_throttle(who: Caller, rt: RuntimeDep) -> ThrottleIO:
    """The organisation's per-mailbox sending limits (providers' own limits apply on top)."""
    async with rt.db.session() as s, s.begin():
        org = await s.get(Organisation, who.org_id)
        return ThrottleIO(**(org.throttle if org and org.throttle else {}))


@router.put("/throttle", response_model=ThrottleIO, responses=error_responses(403, 404))
async def put_throttle(body: ThrottleIO, who: Admin, rt: RuntimeDep) -> ThrottleIO:
    data = body.model_dump(exclude_none=True)
    try:
        parse_limits(data)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=str(exc).split(":", 1)[0]) from exc
    async with rt.db.session() as s, s.begin():
        org = await s.get(Organisation, who.org_id)
        if org is None:
            raise NotFound("organisation not found")
        org.throttle = data
    return ThrottleIO(**data)


# --- API tokens -----------------------------------------------------------------------------


class TokenOut(BaseModel):
    """An API token as its owner sees it after creation: never the secret (only a hash of it
    is kept) and never that hash."""

    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    expired: bool


@router.get("/tokens", response_model=list[TokenOut])
async def list_tokens(who: Caller, rt: RuntimeDep) -> list[TokenOut]:
    """Your API tokens that are not revoked (expired ones too), newest first."""
    now = utcnow()
    async with rt.db.session() as s, s.begin():
        rows = await users.list_tokens(s, who.user_id)
    return [
        TokenOut(
            id=t.id,
            name=t.name,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            expires_at=t.expires_at,
            expired=t.expires_at is not None and t.expires_at <= now,
        )
        for t in rows
    ]


@router.delete("/tokens/{token_id}", status_code=204, responses=error_responses(404))
async def revoke_token(token_id: str, who: Caller, rt: RuntimeDep) -> Response:
    """Revoke one of your tokens for good (the one making this call too, if named)."""
    async with rt.db.session() as s, s.begin():
        await users.revoke_token(s, token_id, user_id=who.user_id)
    return Response(status_code=204)
