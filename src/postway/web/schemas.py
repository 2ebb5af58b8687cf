"""JSON shapes of the REST API. Field rules live in `domain/`; these only shape the data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from postway.delivery.submit import MAX_ATTACHMENTS, MAX_BATCH, MAX_RECIPIENTS
from postway.store.models import ChannelSetting, Delivery, DeliveryEvent, Identity, Message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer of the API: what went wrong in words, and the field when one is to
    blame (`to[3]`, `smtp.host`); a refused body lists each problem in `errors`."""

    error: str
    field: str | None = None
    errors: list[FieldProblem] | None = None


class IdentityIn(Strict):
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    reply_to: str | None = Field(None, max_length=320)
    signature: str | None = None
    channel: str | None = None


class IdentityPatch(Strict):
    name: str | None = Field(None, max_length=200)
    reply_to: str | None = Field(None, max_length=320)
    signature: str | None = None
    channel: str | None = None


class IdentityOut(BaseModel):
    id: str
    name: str
    email: str
    reply_to: str | None
    signature: str | None
    channel: str | None
    verified: bool
    verified_at: datetime | None
    created_at: datetime
    # The From address recipients see per channel (gmail: null while no account is
    # connected); given by GET /identities/{id}.
    effective_from: dict[str, str | None] | None = None

    @classmethod
    def of(cls, row: Identity) -> IdentityOut:
        return cls(
            id=row.id,
            name=row.name,
            email=row.email,
            reply_to=row.reply_to,
            signature=row.signature,
            channel=row.channel,
            verified=row.verified_at is not None,
            verified_at=row.verified_at,
            created_at=row.created_at,
        )


class SmtpIn(Strict):
    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    password: str | None = None
    auth: str | None = None


class ChannelIn(Strict):
    channel: str
    smtp: SmtpIn | None = None


class SmtpOut(BaseModel):
    host: str | None
    port: int | None
    security: str | None
    username: str | None
    auth: str | None
    password_set: bool


class GmailAccountOut(BaseModel):
    """The connected Gmail account (never its tokens). `status`: connected, needs_reconnect
    (the user must connect it again; mail waits) or paused (a Gmail quota; mail waits until
    `paused_until`); `reason` says why in words."""

    address: str
    status: str
    reason: str | None
    paused_until: datetime | None
    send_as: list[str]
    bounce_scanning: bool


class ChannelOut(BaseModel):
    channel: str
    source: str  # "user", "team" or "default"
    smtp: SmtpOut | None
    attention: str | None
    explanation: str
    gmail: GmailAccountOut | None = None

    @classmethod
    def of(
        cls,
        row: ChannelSetting | None,
        source: str,
        explanation: str,
        gmail: GmailAccountOut | None = None,
    ) -> ChannelOut:
        smtp = None
        if row is not None and row.smtp_host:
            smtp = SmtpOut(
                host=row.smtp_host,
                port=row.smtp_port,
                security=row.smtp_security,
                username=row.smtp_username,
                auth=row.smtp_auth,
                password_set=bool(row.smtp_password_enc),
            )
        return cls(
            channel=row.channel if row else "managed",
            source=source,
            smtp=smtp,
            attention=row.attention if row else None,
            explanation=explanation,
            gmail=gmail,
        )


class RelayTestOut(BaseModel):
    ok: bool
    step: str
    message: str


class AttachmentIn(Strict):
    filename: str = Field(max_length=255)
    content_type: str = Field("application/octet-stream", max_length=255)
    content_base64: str


def _at_most(limit: int, what: str) -> BeforeValidator:
    """Refuses a list longer than `limit` before any of its items is looked at (pydantic's
    own max_length counts only after validating every item)."""

    def check(value: object) -> object:
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_long",
                "at most {limit} {what}; this list has {count}",
                {"limit": limit, "what": what, "count": len(value)},
            )
        return value

    return BeforeValidator(check)


Recipients = Annotated[
    list[str],
    _at_most(MAX_RECIPIENTS, "recipients per message"),
    Field(default_factory=list, max_length=MAX_RECIPIENTS),
]


class SendIn(Strict):
    identity_id: str
    to: Recipients
    cc: Recipients
    bcc: Recipients
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: Annotated[
        list[AttachmentIn],
        _at_most(MAX_ATTACHMENTS, "attachments per message"),
        Field(default_factory=list, max_length=MAX_ATTACHMENTS),
    ]


class SendBatchIn(Strict):
    messages: Annotated[
        list[SendIn],
        _at_most(MAX_BATCH, "messages per batch"),
        Field(min_length=1, max_length=MAX_BATCH),
    ]


class EventOut(BaseModel):
    type: str
    state: str
    at: datetime
    detail: dict[str, Any]

    @classmethod
    def of(cls, e: DeliveryEvent) -> EventOut:
        return cls(type=e.type, state=e.state, at=e.created_at, detail=e.detail or {})


class DeliveryOut(BaseModel):
    id: str
    message_id: str
    recipient: str
    kind: str
    channel: str
    state: str
    reason: str | None
    status: str | None
    reply_code: int | None
    diagnostic: str | None
    remote_mta: str | None
    hard: bool | None
    attempts: int
    next_attempt_at: datetime | None
    updated_at: datetime
    events: list[EventOut] | None = None

    @classmethod
    def of(cls, d: Delivery, events: list[DeliveryEvent] | None = None) -> DeliveryOut:
        return cls(
            id=d.id,
            message_id=d.message_id,
            recipient=d.recipient,
            kind=d.kind,
            channel=d.channel,
            state=d.state,
            reason=d.reason,
            status=d.status,
            reply_code=d.reply_code,
            diagnostic=d.diagnostic,
            remote_mta=d.remote_mta,
            hard=d.hard,
            attempts=d.attempts,
            next_attempt_at=d.due_at if d.state in ("queued", "deferred") else None,
            updated_at=d.updated_at,
            events=[EventOut.of(e) for e in events] if events is not None else None,
        )


class AcceptedDelivery(BaseModel):
    id: str
    recipient: str
    state: str


class AcceptedOut(BaseModel):
    id: str
    message_id_header: str
    deliveries: list[AcceptedDelivery]


class MessageOut(BaseModel):
    id: str
    identity_id: str | None
    from_address: str
    subject: str
    channel: str
    message_id_header: str
    size: int
    created_at: datetime
    deliveries: list[DeliveryOut]

    @classmethod
    def of(
        cls, m: Message, deliveries: list[Delivery], events: dict[str, list[DeliveryEvent]]
    ) -> MessageOut:
        return cls(
            id=m.id,
            identity_id=m.identity_id,
            from_address=m.from_address,
            subject=m.subject,
            channel=m.channel,
            message_id_header=m.message_id_header,
            size=m.size,
            created_at=m.created_at,
            deliveries=[DeliveryOut.of(d, events.get(d.id, [])) for d in deliveries],
        )


class Page(BaseModel):
    items: list[Any]
    total: int
    next_offset: int | None


class ConversationOut(BaseModel):
    recipient: str
    messages: int
    last_subject: str
    last_message_id: str
    last_at: datetime
    latest_state: str
    latest_reason: str | None


class SuppressionOut(BaseModel):
    address: str
    reason: str
    created_at: datetime
    source_delivery_id: str | None


class BlockedDomainsIn(Strict):
    domains: list[str]


class ThrottleLimits(Strict):
    """One set of per-mailbox limits; omitted fields mean no limit of that kind."""

    batch_size: int | None = None
    wait_seconds: float | None = None
    daily_cap: int | None = None
    per_minute: int | None = None


class ThrottleIO(ThrottleLimits):
    """Per-mailbox limits: `batch_size` sends, then a pause of `wait_seconds`; caps per day
    and per minute. Omitted fields mean no limit of that kind. `channels` gives a channel
    (`managed`, `smtp`, `gmail`) its own set, used instead of these for its mailboxes."""

    channels: dict[str, ThrottleLimits] | None = None


class BounceMailboxIn(Strict):
    """The IMAP mailbox where a custom SMTP relay's bounces arrive. `security`: tls (port
    993), starttls (143) or none (only to a server on this machine). With
    `reuse_relay_credentials` the relay's username and password log in; otherwise a missing
    password keeps the stored one for the same host and username."""

    host: str | None = Field(None, max_length=253)
    port: int | None = None
    security: str | None = None
    username: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1000)
    folder: str | None = Field(None, max_length=200)
    reuse_relay_credentials: bool = False


class BounceMailboxOut(BaseModel):
    """The bounce mailbox as stored (never its password) and how its last scan went."""

    configured: bool
    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    folder: str | None = None
    reuse_relay_credentials: bool = False
    password_set: bool = False
    last_checked_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def of(cls, row: ChannelSetting | None) -> BounceMailboxOut:
        if row is None or not row.imap_host:
            return cls(configured=False)
        return cls(
            configured=True,
            host=row.imap_host,
            port=row.imap_port,
            security=row.imap_security,
            username=row.smtp_username if row.imap_reuse_relay else row.imap_username,
            folder=row.imap_folder,
            reuse_relay_credentials=row.imap_reuse_relay,
            password_set=bool(
                row.smtp_password_enc if row.imap_reuse_relay else row.imap_password_enc
            ),
            last_checked_at=row.imap_checked_at,
            last_error=row.imap_error,
        )


class MailboxTestOut(BaseModel):
    """The bounce mailbox test: `step` is resolve, connect, tls, auth, select or done."""

    ok: bool
    step: str
    message: str
