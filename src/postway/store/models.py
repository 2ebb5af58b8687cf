"""SQLAlchemy models. Every user-owned row carries `org_id` and `user_id` so that every query
can be scoped to its owner; the deliveries table doubles as the durable queue."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive text otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


Id = String(32)


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    blocked_domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"batch_size": 25, "wait_seconds": 45, "daily_cap": 2000, "per_minute": 30}; empty: none
    throttle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginThrottle(Base):
    """Failed logins counted per account or per client address, and the lock they earned.

    `key` is a hash of what is counted ("account:EMAIL", "address:IP"), so typed emails of
    unknown users and client addresses are not kept in the clear.
    """

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ConfirmationMail(Base):
    """One identity confirmation mail sent, counted against the per-user and per-address
    limits (the mail itself is a system message in `messages`)."""

    __tablename__ = "confirmation_mails"
    __table_args__ = (
        Index("ix_confirmation_mails_user_sent", "user_id", "sent_at"),
        Index("ix_confirmation_mails_address_sent", "address", "sent_at"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("user_id", "email"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320), nullable=True)
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verify_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    verify_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Soft delete: sent messages keep pointing at the identity they were sent as.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChannelSetting(Base):
    """A user's channel choice; a row with user_id NULL is the organisation's team channel."""

    __tablename__ = "channel_settings"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    channel: Mapped[str] = mapped_column(String(16), default="managed")
    smtp_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    smtp_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    smtp_security: Mapped[str | None] = mapped_column(String(16), nullable=True)
    smtp_username: Mapped[str | None] = mapped_column(String(320), nullable=True)
    smtp_password_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    smtp_auth: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The IMAP mailbox where the relay's bounces arrive (see bounces.imap_scan); with
    # imap_reuse_relay the relay's username and password log in.
    imap_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    imap_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    imap_security: Mapped[str | None] = mapped_column(String(16), nullable=True)
    imap_username: Mapped[str | None] = mapped_column(String(320), nullable=True)
    imap_password_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    imap_reuse_relay: Mapped[bool] = mapped_column(Boolean, default=False)
    imap_folder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    imap_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    imap_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attention: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    identity_id: Mapped[str | None] = mapped_column(
        ForeignKey("identities.id"), index=True, nullable=True
    )
    # "user" for a rep's mail, "system" for Postway's own (identity confirmations).
    kind: Mapped[str] = mapped_column(String(8), default="user")
    channel: Mapped[str] = mapped_column(String(16))
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id_header: Mapped[str] = mapped_column(String(400))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    needs_smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Delivery(Base):
    """One recipient of one message, and its place in the durable queue.

    Queue invariant: `due_at` is NULL exactly when the state is final. A claimed delivery has
    `due_at` moved to its lease expiry, so a worker that dies simply lets it become due again;
    `lease_owner` fences late writes from a worker whose lease was taken over.
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "due_at"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), index=True)
    # Declared so one flush orders inserts (message before deliveries); never loaded.
    message: Mapped[Message] = relationship(lazy="raise", viewonly=False)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_domain: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(3), default="to")
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reply_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    diagnostic: Mapped[str | None] = mapped_column(Text, nullable=True)
    remote_mta: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hard: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DeliveryEvent(Base):
    """Append-only history of a delivery; never updated or deleted by the application."""

    __tablename__ = "delivery_events"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id"), index=True)
    delivery: Mapped[Delivery] = relationship(lazy="raise", viewonly=False)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("org_id", "address"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(64))
    source_delivery_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BounceBody(Base):
    """A raw message received by the bounce intake, stored once however many VERP addresses
    it was sent to (keyed by its SHA-256), and deleted when the retention period ends; the
    `bounce_messages` rows that record what it did are kept."""

    __tablename__ = "bounce_bodies"
    __table_args__ = (Index("ix_bounce_bodies_peer_received", "peer_key", "received_at"),)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    # The client that first sent it (IPv6: its /64), for the per-client daily byte quota.
    peer_key: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class BounceMessage(Base):
    """One recipient (VERP address) of a message received by the bounce intake; the message
    itself is a `BounceBody`, stored before it is parsed so a parse failure loses nothing.
    `status` says what processing made of it."""

    __tablename__ = "bounce_messages"
    __table_args__ = (Index("ix_bounce_messages_peer_received", "peer_key", "received_at"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    rcpt_to: Mapped[str] = mapped_column(String(320))
    peer: Mapped[str] = mapped_column(String(64), default="")
    peer_key: Mapped[str] = mapped_column(String(64), default="")  # IPv6: the /64
    # No foreign key: the body goes when retention ends, the row (and the hash) stays.
    raw_sha256: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[BounceBody | None] = relationship(
        primaryjoin="foreign(BounceMessage.raw_sha256) == BounceBody.sha256",
        lazy="raise",
        viewonly=True,
    )
    size: Mapped[int] = mapped_column(Integer)
    # received, processed, ignored (not a bounce), unmatched (no signed token), failed
    status: Mapped[str] = mapped_column(String(16), default="received", index=True)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivery_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    org_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def raw(self) -> bytes:
        """The message as received (load `body` first); empty once retention deleted it."""
        return self.body.raw if self.body is not None else b""


class ThrottleWindow(Base):
    """One sending mailbox's use of its limits (see domain.throttle.Window)."""

    __tablename__ = "throttle_windows"
    mailbox: Mapped[str] = mapped_column(String(400), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    day_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    day_count: Mapped[int] = mapped_column(Integer, default=0)
    minute_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    minute_count: Mapped[int] = mapped_column(Integer, default=0)
    batch_count: Mapped[int] = mapped_column(Integer, default=0)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConnectedAccount(Base):
    """A rep's connected mailbox (Gmail now, Microsoft 365 next): one per user and provider.

    Tokens are encrypted with `SecretBox` and never leave the store in the clear except to the
    channel that sends with them. `status` is `connected`, `needs_reconnect` (the grant was
    revoked or expired: mail waits until the user connects again) or `paused` (a provider
    quota: mail waits until `paused_until`). `version` grows with every change of the tokens
    or the state, so cached clients know when to rebuild; `refreshing_until` is the claim of
    the one worker refreshing the access token (see `store.accounts.fresh_token`).
    """

    __tablename__ = "connected_accounts"
    __table_args__ = (UniqueConstraint("user_id", "provider"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    access_token_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    send_as: Mapped[list[str]] = mapped_column(JSON, default=list)  # verified aliases
    status: Mapped[str] = mapped_column(String(16), default="connected")
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    bounce_scanning: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=0)
    refreshing_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuthState(Base):
    """A started OAuth connect flow: single use, short-lived, bound to the user who started
    it (and to their browser session when started from a page). Only a hash of the `state`
    value is kept; the PKCE verifier is encrypted."""

    __tablename__ = "oauth_states"
    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(16))
    verifier_enc: Mapped[str] = mapped_column(Text)
    session_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bounce_scanning: Mapped[bool] = mapped_column(Boolean, default=False)
    replace: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccountThread(Base):
    """Which provider conversation (Gmail threadId) a message sent through an account went
    into, by its Message-ID, so a reply to it is filed in the same conversation."""

    __tablename__ = "account_threads"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id_header: Mapped[str] = mapped_column(String(400), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailboxReport(Base):
    """One message of a user's own mailbox that a bounce scan has read (IMAP now, Gmail
    next), remembered so no scan reads or applies it twice. `mailbox` names the mailbox
    (`imap://user@host:port/INBOX`), `source_id` the message in it (UIDVALIDITY:UID, a Gmail
    id). `status`: processed (it bounced deliveries), ignored (not a bounce), unmatched (names
    none of the user's deliveries), failed (could not be parsed)."""

    __tablename__ = "mailbox_reports"
    __table_args__ = (UniqueConstraint("user_id", "mailbox", "source_id"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    mailbox: Mapped[str] = mapped_column(String(400))
    source_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
