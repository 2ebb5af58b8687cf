"""The custom SMTP sender's bounce mailbox on the API (IMAP; see `bounces.imap_scan`):

    GET    /api/v1/delivery-channel/smtp/bounce-mailbox
    PUT    /api/v1/delivery-channel/smtp/bounce-mailbox         (set or replace)
    DELETE /api/v1/delivery-channel/smtp/bounce-mailbox
    POST   /api/v1/delivery-channel/smtp/bounce-mailbox/test    (the given one, else the stored)

The mailbox belongs to the caller's own channel settings, next to their relay; its password
is stored encrypted and never returned. The host gets the relays' refusal of non-public
addresses (unless POSTWAY_ALLOW_PRIVATE_RELAYS=1).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from postway.bounces.imap_scan import ImapError, check_mailbox, resolve_imap
from postway.errors import Conflict, InvalidInput
from postway.store import bounce_mailbox as bm
from postway.store import channel_settings as cs
from postway.web.deps import Caller, RuntimeDep
from postway.web.openapi_doc import error_responses
from postway.web.schemas import BounceMailboxIn, BounceMailboxOut, MailboxTestOut

router = APIRouter(prefix="/api/v1/delivery-channel/smtp/bounce-mailbox")


@router.get("", response_model=BounceMailboxOut)
async def get_bounce_mailbox(who: Caller, rt: RuntimeDep) -> BounceMailboxOut:
    async with rt.db.session() as s, s.begin():
        return BounceMailboxOut.of(await cs.user_setting(s, who))


@router.put("", response_model=BounceMailboxOut, responses=error_responses(409))
async def put_bounce_mailbox(
    body: BounceMailboxIn, who: Caller, rt: RuntimeDep
) -> BounceMailboxOut:
    """Where the relay's bounces arrive; Postway reads delivery reports there and marks the
    deliveries they name as bounced, never deleting, moving or flagging anything."""
    async with rt.db.session() as s, s.begin():
        row = await cs.user_setting(s, who)
        if row is None or not row.smtp_host:
            raise Conflict(
                "set up your custom SMTP relay first (PUT /api/v1/delivery-channel): the "
                "bounce mailbox is where that relay's bounces arrive"
            )
        data = bm.validate_mailbox(body.model_dump(), row)
        mailbox = bm.mailbox_from(data, row, rt.box)
        try:
            await resolve_imap(mailbox, rt.settings)
        except ImapError as exc:
            raise InvalidInput(f"host: {exc}", field="host") from exc
        bm.save_mailbox(row, rt.box, data)
        await s.flush()
        return BounceMailboxOut.of(row)


@router.delete("", status_code=204)
async def delete_bounce_mailbox(who: Caller, rt: RuntimeDep) -> Response:
    """Stop reading the bounce mailbox (what it already did stays recorded)."""
    async with rt.db.session() as s, s.begin():
        row = await cs.user_setting(s, who)
        if row is not None:
            bm.clear_mailbox(row)
    return Response(status_code=204)


@router.post("/test", response_model=MailboxTestOut)
async def test_bounce_mailbox(
    who: Caller, rt: RuntimeDep, body: BounceMailboxIn | None = None
) -> MailboxTestOut:
    """Connect, negotiate TLS, log in and open the folder read-only; says which step failed,
    in words. Tests the mailbox given, else the stored one."""
    async with rt.db.session() as s, s.begin():
        row = await cs.user_setting(s, who)
        if body is not None and body.host:
            mailbox = bm.mailbox_from(bm.validate_mailbox(body.model_dump(), row), row, rt.box)
        elif row is not None and (stored := bm.mailbox_of(row, rt.box)) is not None:
            mailbox = stored
        else:
            raise InvalidInput("no bounce mailbox is configured; give one to test", field="host")
    result = await check_mailbox(mailbox, rt.settings)
    return MailboxTestOut(ok=result.ok, step=result.step, message=result.message)
