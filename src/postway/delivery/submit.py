"""Accepting mail: validate, build, and store the message with one delivery per recipient.

Invariant: when `submit_message` returns, the message and all its deliveries are committed
(the caller answers 202 only after that), or nothing at all was stored.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.domain.addresses import domain_of, normalize_address
from postway.domain.message import Attachment, Draft, build_message
from postway.domain.states import ChannelName, DeliveryState
from postway.errors import Conflict, InvalidInput, TooLarge
from postway.store.channel_settings import effective_setting
from postway.store.events import append_event
from postway.store.identities import get_identity
from postway.store.models import Delivery, Identity, Message, new_id, utcnow
from postway.store.users import Principal

MAX_RECIPIENTS = 1000


@dataclass
class AttachmentIn:
    filename: str
    content_type: str
    content_base64: str


@dataclass
class SendRequest:
    identity_id: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = field(default_factory=list)


def _addresses(values: list[str], name: str) -> list[str]:
    return [normalize_address(v, field=f"{name}[{i}]") for i, v in enumerate(values)]


def _attachments(items: list[AttachmentIn], limit: int) -> tuple[Attachment, ...]:
    out: list[Attachment] = []
    total = 0
    for i, item in enumerate(items):
        try:
            content = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                f"attachments[{i}].content_base64: not valid base64", field="attachments"
            ) from exc
        total += len(content)
        if total > limit:
            raise TooLarge(f"attachments: larger than the {limit // (1024 * 1024)} MB limit")
        out.append(Attachment(item.filename, item.content_type, content))
    return tuple(out)


def _draft(req: SendRequest, identity: Identity, limit: int) -> Draft:
    to, cc, bcc = _addresses(req.to, "to"), _addresses(req.cc, "cc"), _addresses(req.bcc, "bcc")
    if not to and not cc and not bcc:
        raise InvalidInput("to: give at least one recipient", field="to")
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise InvalidInput(f"to: at most {MAX_RECIPIENTS} recipients per message", field="to")
    return Draft(
        from_name=identity.name,
        from_email=identity.email,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        subject=req.subject,
        text=req.text,
        html=req.html,
        reply_to=identity.reply_to,
        attachments=_attachments(req.attachments, limit),
        signature=identity.signature,
    )


def _check_channel(channel: ChannelName, identity: Identity) -> None:
    if channel is ChannelName.MANAGED and identity.verified_at is None:
        raise Conflict(
            f"identity {identity.email} is not verified: send the confirmation "
            "(POST /api/v1/identities/{id}/verify) and click its link first"
        )
    if channel is ChannelName.GMAIL:
        raise Conflict("the gmail channel needs a connected Gmail account; none is connected")


async def submit_message(
    db: AsyncSession, settings: Settings, who: Principal, req: SendRequest
) -> tuple[Message, list[Delivery]]:
    with db.no_autoflush:  # pending rows of earlier messages go out together at commit
        identity = await get_identity(db, who, req.identity_id)
        cache = db.info.setdefault("effective_channel", {})
        if identity.id not in cache:  # one lookup per identity per transaction
            cache[identity.id] = await effective_setting(db, identity)
    channel, setting = cache[identity.id]
    _check_channel(channel, identity)
    if channel is ChannelName.SMTP and (setting is None or not setting.smtp_host):
        raise Conflict("the smtp channel is chosen but no relay is configured")
    draft = _draft(req, identity, settings.max_message_bytes)
    built = build_message(draft, message_id_domain=settings.hostname)
    if built.size > settings.max_message_bytes:
        raise TooLarge(
            f"message: {built.size} bytes is over the limit of {settings.max_message_bytes} bytes"
        )
    now = utcnow()
    message = Message(
        id=new_id(),
        org_id=who.org_id,
        user_id=who.user_id,
        identity_id=identity.id,
        channel=channel.value,
        from_address=identity.email,
        subject=req.subject,
        message_id_header=built.message_id,
        raw=built.raw,
        size=built.size,
        needs_smtputf8=built.needs_smtputf8,
        created_at=now,
    )
    db.add(message)
    deliveries = []
    seen: set[str] = set()
    for kind, addrs in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc)):
        for addr in addrs:
            if addr.lower() in seen:  # one delivery per recipient, even if named twice
                continue
            seen.add(addr.lower())
            deliveries.append(new_delivery(settings, message, addr, kind, now))
    db.add_all(deliveries)
    for d in deliveries:
        append_event(db, d, "queued", channel=channel.value)
    # ids are made here, not by the database, so everything is written in one flush at commit
    return message, deliveries


def new_delivery(
    settings: Settings, message: Message, address: str, kind: str, now: object
) -> Delivery:
    return Delivery(
        id=new_id(),
        message_id=message.id,
        org_id=message.org_id,
        user_id=message.user_id,
        recipient=address,
        recipient_domain=domain_of(address),
        kind=kind,
        channel=message.channel,
        state=DeliveryState.QUEUED.value,
        due_at=now,
        expires_at=now + timedelta(seconds=settings.queue_lifetime_seconds),  # type: ignore[operator]
        created_at=now,
        updated_at=now,
    )


async def submit_system_message(
    db: AsyncSession,
    settings: Settings,
    *,
    org_id: str,
    user_id: str,
    to: str,
    subject: str,
    text: str,
) -> Message:
    """Postway's own mail (identity confirmations), queued on the managed channel like any
    other so it is retried and its fate is recorded; kept out of the user's conversations."""
    draft = Draft(
        from_name="Postway",
        from_email=f"no-reply@{settings.bounce_domain}",
        to=(normalize_address(to, field="email"),),
        subject=subject,
        text=text,
    )
    built = build_message(draft, message_id_domain=settings.hostname)
    now = utcnow()
    message = Message(
        org_id=org_id,
        user_id=user_id,
        identity_id=None,
        kind="system",
        channel=ChannelName.MANAGED.value,
        from_address=draft.from_email,
        subject=subject,
        message_id_header=built.message_id,
        raw=built.raw,
        size=built.size,
        needs_smtputf8=built.needs_smtputf8,
        created_at=now,
    )
    db.add(message)
    await db.flush()
    delivery = new_delivery(settings, message, draft.to[0], "to", now)
    db.add(delivery)
    await db.flush()
    append_event(db, delivery, "queued", channel=message.channel)
    return message
