"""Identities: the names and addresses a rep sends as, scoped to their owner."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import check_display_name, normalize_address
from postway.errors import Conflict, InvalidInput, NotFound
from postway.security import new_token, token_hash
from postway.store.channel_settings import parse_channel
from postway.store.models import Identity, utcnow
from postway.store.users import Principal

MAX_SIGNATURE = 10_000


def _channel(value: str | None) -> str | None:
    return None if value is None else parse_channel(value).value


def _signature(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_SIGNATURE or "\x00" in value:
        raise InvalidInput(f"signature: at most {MAX_SIGNATURE} characters", field="signature")
    return value


async def list_identities(db: AsyncSession, who: Principal) -> list[Identity]:
    rows = await db.scalars(
        select(Identity)
        .where(Identity.user_id == who.user_id, Identity.deleted_at.is_(None))
        .order_by(Identity.created_at)
    )
    return list(rows)


async def get_identity(db: AsyncSession, who: Principal, identity_id: str) -> Identity:
    """The caller's own identity; another user's is reported as not found, never revealed."""
    row = await db.get(Identity, identity_id)
    if row is None or row.user_id != who.user_id or row.deleted_at is not None:
        raise NotFound(f"no identity with id {identity_id}")
    return row


async def create_identity(
    db: AsyncSession,
    who: Principal,
    *,
    name: str,
    email: str,
    reply_to: str | None = None,
    signature: str | None = None,
    channel: str | None = None,
) -> Identity:
    email = normalize_address(email, field="email")
    existing = await db.scalar(
        select(Identity).where(Identity.user_id == who.user_id, Identity.email == email)
    )
    if existing is not None and existing.deleted_at is None:
        raise Conflict(f"you already have an identity for {email}")
    fields = {
        "name": check_display_name(name, field="name"),
        "reply_to": normalize_address(reply_to, field="reply_to") if reply_to else None,
        "signature": _signature(signature),
        "channel": _channel(channel),
    }
    if existing is not None:  # re-adding a deleted identity revives it, unverified
        for key, value in fields.items():
            setattr(existing, key, value)
        existing.deleted_at = None
        existing.verified_at = None
        await db.flush()
        return existing
    row = Identity(org_id=who.org_id, user_id=who.user_id, email=email, **fields)
    db.add(row)
    await db.flush()
    return row


async def update_identity(
    db: AsyncSession, who: Principal, identity_id: str, changes: dict[str, object]
) -> Identity:
    row = await get_identity(db, who, identity_id)
    for key, value in changes.items():
        if key == "name":
            row.name = check_display_name(str(value), field="name")
        elif key == "reply_to":
            row.reply_to = normalize_address(str(value), field="reply_to") if value else None
        elif key == "signature":
            row.signature = _signature(value if value is None else str(value))
        elif key == "channel":
            row.channel = _channel(value if value is None else str(value))
        elif key == "email":
            raise InvalidInput("email: an identity's address cannot change; add a new identity")
        else:
            raise InvalidInput(f"{key}: unknown field", field=key)
    await db.flush()
    return row


async def delete_identity(db: AsyncSession, who: Principal, identity_id: str) -> None:
    row = await get_identity(db, who, identity_id)
    row.deleted_at = utcnow()


async def start_verification(
    db: AsyncSession, who: Principal, identity_id: str
) -> tuple[Identity, str]:
    """Issue a fresh confirmation token (only its hash is kept); returns it for the mail."""
    row = await get_identity(db, who, identity_id)
    token = new_token("v")
    row.verify_token_hash = token_hash(token)
    row.verify_sent_at = utcnow()
    return row, token


async def confirm_verification(db: AsyncSession, token: str) -> Identity:
    row = await db.scalar(select(Identity).where(Identity.verify_token_hash == token_hash(token)))
    if row is None or row.deleted_at is not None:
        raise NotFound("this confirmation link is invalid or was already used")
    row.verified_at = utcnow()
    row.verify_token_hash = None
    return row


async def mark_verified(db: AsyncSession, email: str) -> list[Identity]:
    """Admin set-up path: verify every identity with this address."""
    email = normalize_address(email, field="email")
    rows = list(
        await db.scalars(
            select(Identity).where(Identity.email == email, Identity.deleted_at.is_(None))
        )
    )
    if not rows:
        raise NotFound(f"no identity with the address {email}")
    for row in rows:
        row.verified_at = utcnow()
    return rows
