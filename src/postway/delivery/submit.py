"""Accepting mail: validate, build, and store the message with one delivery per recipient.

Invariant: when `submit_message` returns, the message and all its deliveries are committed
(the caller answers 202 only after that), or nothing at all was stored.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.gmail import PROVIDER as GMAIL_PROVIDER
from postway.config import Settings
from postway.domain.addresses import domain_of, normalize_address
from postway.domain.message import Attachment, BuiltMessage, Draft, build_message
from postway.domain.sender import effective_from
from postway.domain.states import ChannelName, DeliveryState
from postway.errors import Conflict, InvalidInput, PostwayError, TooLarge
from postway.store.accounts import account_of
from postway.store.channel_settings import effective_setting
from postway.store.db import Database
from postway.store.events import append_event, event_row
from postway.store.identities import get_identity
from postway.store.models import Delivery, DeliveryEvent, Identity, Message, new_id, utcnow
from postway.store.users import Principal

# Counts are checked before any item is looked at: validating addresses one by one is the
# costly part, and 400,000 of them would hold the event loop for seconds.
MAX_RECIPIENTS = 1000  # to + cc + bcc of one message
MAX_ATTACHMENTS = 100
MAX_BATCH = 500  # messages in one POST /messages/batch
MAX_BATCH_RECIPIENTS = 5000  # recipients of all the messages of one batch together
QUEUED = DeliveryState.QUEUED.value


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


def check_counts(req: SendRequest) -> None:
    """Refuse a request with too many recipients or attachments before any is validated."""
    count = len(req.to) + len(req.cc) + len(req.bcc)
    if count > MAX_RECIPIENTS:
        raise InvalidInput(
            f"to: at most {MAX_RECIPIENTS} recipients per message (to, cc and bcc together); "
            f"this one has {count}",
            field="to",
        )
    if len(req.attachments) > MAX_ATTACHMENTS:
        raise InvalidInput(
            f"attachments: at most {MAX_ATTACHMENTS} per message; this one has "
            f"{len(req.attachments)}",
            field="attachments",
        )


def _draft(req: SendRequest, ctx: SendContext, limit: int) -> Draft:
    check_counts(req)
    to, cc, bcc = _addresses(req.to, "to"), _addresses(req.cc, "cc"), _addresses(req.bcc, "bcc")
    if not to and not cc and not bcc:
        raise InvalidInput("to: give at least one recipient", field="to")
    return Draft(
        from_name=ctx.name,
        from_email=ctx.from_email,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        subject=req.subject,
        text=req.text,
        html=req.html,
        reply_to=ctx.reply_to,
        attachments=_attachments(req.attachments, limit),
        signature=ctx.signature,
    )


def _check_channel(channel: ChannelName, identity: Identity) -> None:
    if channel is ChannelName.MANAGED and identity.verified_at is None:
        raise Conflict(
            f"identity {identity.email} is not verified: send the confirmation "
            "(POST /api/v1/identities/{id}/verify) and click its link first"
        )


async def _sender_address(db: AsyncSession, channel: ChannelName, identity: Identity) -> str:
    """The From address the message is built with: what recipients will see (domain.sender),
    so the stored message is exactly what the channel sends."""
    if channel is not ChannelName.GMAIL:
        return identity.email
    cache = db.info.setdefault("connected_account", {})
    if identity.user_id not in cache:
        cache[identity.user_id] = await account_of(db, identity.user_id, GMAIL_PROVIDER)
    account = cache[identity.user_id]
    address = effective_from(
        channel,
        identity.email,
        account.address if account else None,
        account.send_as if account else (),
    )
    if address is None:
        raise Conflict("the gmail channel needs a connected Gmail account; none is connected")
    return address


@dataclass(frozen=True, slots=True)
class SendContext:
    """What a send's reads decided, as plain values. Equal contexts build the same message,
    so the group commit can tell whether a cached context still holds by comparing them."""

    user_id: str
    identity_id: str
    name: str
    reply_to: str | None
    signature: str | None
    channel: ChannelName
    from_email: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated, built message that is ready to be stored."""

    identity_id: str
    from_address: str
    channel: ChannelName
    draft: Draft
    built: BuiltMessage
    subject: str


async def load_context(db: AsyncSession, who: Principal, identity_id: str) -> SendContext:
    """The identity, its channel and the From address recipients will see; raises what the
    send would be refused for (unknown identity, unverified, channel not ready)."""
    with db.no_autoflush:  # pending rows of earlier messages go out together at commit
        identity = await get_identity(db, who, identity_id)
        cache = db.info.setdefault("effective_channel", {})
        if identity.id not in cache:  # one lookup per identity per transaction
            cache[identity.id] = await effective_setting(db, identity)
    channel, setting = cache[identity.id]
    _check_channel(channel, identity)
    if channel is ChannelName.SMTP and (setting is None or not setting.smtp_host):
        raise Conflict("the smtp channel is chosen but no relay is configured")
    with db.no_autoflush:
        from_email = await _sender_address(db, channel, identity)
    return SendContext(
        identity.user_id,
        identity.id,
        identity.name,
        identity.reply_to,
        identity.signature,
        channel,
        from_email,
    )


def build_prepared(ctx: SendContext, settings: Settings, req: SendRequest) -> Prepared:
    """Validate the request and build its MIME message; no I/O."""
    draft = _draft(req, ctx, settings.max_message_bytes)
    built = build_message(draft, message_id_domain=settings.hostname)
    if built.size > settings.max_message_bytes:
        raise TooLarge(
            f"message: {built.size} bytes is over the limit of {settings.max_message_bytes} bytes"
        )
    return Prepared(ctx.identity_id, ctx.from_email, ctx.channel, draft, built, req.subject)


async def prepare_message(
    db: AsyncSession, settings: Settings, who: Principal, req: SendRequest
) -> Prepared:
    """Every check and the MIME build; reads only, so it can run outside the write lock."""
    return build_prepared(await load_context(db, who, req.identity_id), settings, req)


def store_message(
    db: AsyncSession, settings: Settings, who: Principal, p: Prepared
) -> tuple[Message, list[Delivery]]:
    """Add the message, one delivery per recipient and their `queued` events to `db`.

    Ids are made here, not by the database, so the rows go out in one flush at commit."""
    now = utcnow()
    message = Message(
        id=new_id(),
        org_id=who.org_id,
        user_id=who.user_id,
        identity_id=p.identity_id,
        channel=p.channel.value,
        from_address=p.from_address,
        subject=p.subject,
        message_id_header=p.built.message_id,
        raw=p.built.raw,
        size=p.built.size,
        needs_smtputf8=p.built.needs_smtputf8,
        created_at=now,
    )
    db.add(message)
    deliveries = [new_delivery(settings, message, addr, kind, now) for kind, addr in _recipients(p)]
    db.add_all(deliveries)
    for d in deliveries:
        append_event(db, d, "queued", channel=p.channel.value)
    return message, deliveries


def _recipients(p: Prepared) -> list[tuple[str, str]]:
    """(kind, address) once per recipient, even if named twice."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for kind, addrs in (("to", p.draft.to), ("cc", p.draft.cc), ("bcc", p.draft.bcc)):
        for addr in addrs:
            if addr.lower() not in seen:
                seen.add(addr.lower())
                out.append((kind, addr))
    return out


@dataclass(frozen=True, slots=True)
class Accepted:
    """A stored message as the API reports it: its id, Message-ID and (delivery id, recipient)
    per recipient, every one of them `queued`."""

    id: str
    message_id_header: str
    deliveries: tuple[tuple[str, str], ...]


@dataclass
class Rows:
    """Column values of accepted messages, written with one multi-row INSERT per table."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, settings: Settings, who: Principal, p: Prepared, now: datetime) -> Accepted:
        mid = new_id()
        self.messages.append(
            {
                "id": mid,
                "org_id": who.org_id,
                "user_id": who.user_id,
                "identity_id": p.identity_id,
                "kind": "user",
                "channel": p.channel.value,
                "from_address": p.from_address,
                "subject": p.subject,
                "message_id_header": p.built.message_id,
                "raw": p.built.raw,
                "size": p.built.size,
                "needs_smtputf8": p.built.needs_smtputf8,
                "created_at": now,
            }
        )
        expires = now + timedelta(seconds=settings.queue_lifetime_seconds)
        done = []
        for kind, addr in _recipients(p):
            did = new_id()
            self.deliveries.append(
                {
                    "id": did,
                    "message_id": mid,
                    "org_id": who.org_id,
                    "user_id": who.user_id,
                    "recipient": addr,
                    "recipient_domain": domain_of(addr),
                    "kind": kind,
                    "channel": p.channel.value,
                    "state": QUEUED,
                    "attempts": 0,
                    "due_at": now,
                    "expires_at": expires,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self.events.append(
                event_row(did, who.org_id, "queued", QUEUED, {"channel": p.channel.value}, now)
            )
            done.append((did, addr))
        return Accepted(mid, p.built.message_id, tuple(done))

    async def insert(self, db: AsyncSession) -> None:
        """Messages, then deliveries, then events: each table in one executemany."""
        conn = await db.connection()
        for model, rows in (
            (Message, self.messages),
            (Delivery, self.deliveries),
            (DeliveryEvent, self.events),
        ):
            if rows:  # Core insert on the table: no ORM objects, one executemany
                await conn.execute(insert(model.__table__), rows)  # type: ignore[arg-type]


async def submit_message(
    db: AsyncSession, settings: Settings, who: Principal, req: SendRequest
) -> tuple[Message, list[Delivery]]:
    """Check, build and add a message in one session (the caller commits)."""
    return store_message(db, settings, who, await prepare_message(db, settings, who, req))


async def accept_messages(
    database: Database, settings: Settings, who: Principal, reqs: list[SendRequest]
) -> list[Accepted]:
    """Many messages at once (a CRM's sequence step): all are checked and built in one read
    transaction, then stored in one write transaction; all or none are accepted."""
    if len(reqs) > MAX_BATCH:
        raise InvalidInput(f"messages: at most {MAX_BATCH} per batch", field="messages")
    total = sum(len(r.to) + len(r.cc) + len(r.bcc) for r in reqs)
    if total > MAX_BATCH_RECIPIENTS:
        raise InvalidInput(
            f"messages: at most {MAX_BATCH_RECIPIENTS} recipients in one batch; "
            f"this one has {total}",
            field="messages",
        )
    for i, r in enumerate(reqs):
        try:
            check_counts(r)
        except InvalidInput as exc:
            raise InvalidInput(f"messages[{i}].{exc}", field=f"messages[{i}].{exc.field}") from exc
    prepared = []
    async with database.reader() as s, s.begin():
        for i, r in enumerate(reqs):
            try:
                prepared.append(await prepare_message(s, settings, who, r))
            except InvalidInput as exc:  # say which message, keep the kind (e.g. TooLarge)
                where = f"messages[{i}]"
                raise type(exc)(f"{where}.{exc}", field=f"{where}.{exc.field or ''}") from exc
            except PostwayError as exc:
                raise type(exc)(f"messages[{i}]: {exc}") from exc
    rows, now = Rows(), utcnow()
    accepted = [rows.add(settings, who, p, now) for p in prepared]
    async with database.session() as s, s.begin():
        await rows.insert(s)
    return accepted


async def accept_message(
    database: Database, settings: Settings, who: Principal, req: SendRequest
) -> tuple[Message, list[Delivery]]:
    """The API's path: checks and the MIME build in a read transaction, then a short write
    transaction, so building mail never holds SQLite's writer lock. Committed on return."""
    async with database.reader() as s, s.begin():
        prepared = await prepare_message(s, settings, who, req)
    async with database.session() as s, s.begin():
        return store_message(s, settings, who, prepared)


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
