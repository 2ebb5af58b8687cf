"""Organisations, users, API tokens and web sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import normalize_address
from postway.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from postway.security import (
    dummy_password_hash,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from postway.store.models import ApiToken, Organisation, User, WebSession, utcnow

SESSION_LIFETIME = timedelta(days=7)
MIN_PASSWORD = 8


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling; every query that touches user data is scoped by it."""

    user_id: str
    org_id: str
    email: str
    is_admin: bool


def principal_of(user: User) -> Principal:
    return Principal(user.id, user.org_id, user.email, user.is_admin)


async def create_user(
    db: AsyncSession, email: str, password: str, *, admin: bool = False, org_name: str | None = None
) -> User:
    """Create a user; the first user (or one naming a new org) founds an organisation."""
    email = normalize_address(email, field="email").lower()
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password: use at least {MIN_PASSWORD} characters", field="password")
    if await db.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"a user with the email {email} already exists")
    org = None
    if org_name is None:
        org = await db.scalar(select(Organisation).order_by(Organisation.created_at).limit(1))
    if org is None:
        org = Organisation(name=org_name or email.split("@", 1)[1], blocked_domains=[])
        db.add(org)
        await db.flush()
    user = User(org_id=org.id, email=email, password_hash=hash_password(password), is_admin=admin)
    db.add(user)
    await db.flush()
    return user


async def get_user_by_email(db: AsyncSession, email: str) -> User:
    user = await db.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user with the email {email}")
    return user


async def login_record(db: AsyncSession, email: str) -> tuple[str, str] | None:
    """(user id, password hash) of the user with this email, or None. The hash is checked
    by `password_matches` after the transaction is closed: argon2 must not hold the lock."""
    row = (
        await db.execute(
            select(User.id, User.password_hash).where(User.email == email.strip().lower())
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Argon2 verification whether or not the user exists (against a dummy hash when not),
    so the time taken does not tell which emails have accounts. Blocking: run in a thread."""
    ok = verify_password(stored_hash or dummy_password_hash(), password)
    return ok and stored_hash is not None


async def create_token(
    db: AsyncSession, user: User, name: str = "", *, expires_in: timedelta | None = None
) -> str:
    """A new API token for `user`, shown only now (only its hash is kept); it stops working
    after `expires_in` when given, or when revoked."""
    token = new_token("pw")
    expires_at = utcnow() + expires_in if expires_in is not None else None
    db.add(
        ApiToken(user_id=user.id, token_hash=token_hash(token), name=name, expires_at=expires_at)
    )
    await db.flush()
    return token


async def user_for_token(db: AsyncSession, token: str) -> User:
    row = await db.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == token_hash(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise AuthenticationFailed("the bearer token is unknown or revoked")
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed("the bearer token has expired; create a new one")
    user = await db.get(User, row.user_id)
    if user is None:
        raise AuthenticationFailed("the bearer token's user no longer exists")
    row.last_used_at = now
    return user


async def list_tokens(db: AsyncSession, user_id: str) -> list[ApiToken]:
    """The user's tokens that were not revoked (expired ones too, so they can be cleared),
    newest first."""
    rows = await db.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    return list(rows)


async def revoke_token(db: AsyncSession, token_id: str, *, user_id: str | None = None) -> ApiToken:
    """Revoke a token for good. With `user_id`, only that user's own: another user's token
    is reported as not found, never revealed. Without it (the CLI), any token."""
    row = await db.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None or (user_id and row.user_id != user_id):
        raise NotFound(f"no token with id {token_id}")
    row.revoked_at = utcnow()
    await db.flush()
    return row


async def create_web_session(db: AsyncSession, user: User) -> tuple[str, str]:
    """Returns (session cookie value, CSRF token)."""
    token = new_token("ws")
    csrf = new_token("csrf")
    db.add(
        WebSession(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=csrf,
            expires_at=utcnow() + SESSION_LIFETIME,
        )
    )
    await db.flush()
    return token, csrf


async def user_for_session(db: AsyncSession, token: str) -> tuple[User, str]:
    row = await db.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if row is None or row.expires_at < utcnow():
        raise AuthenticationFailed("please log in")
    user = await db.get(User, row.user_id)
    if user is None:
        raise AuthenticationFailed("please log in")
    return user, row.csrf_token


async def end_web_session(db: AsyncSession, token: str) -> None:
    row = await db.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if row is not None:
        await db.delete(row)
