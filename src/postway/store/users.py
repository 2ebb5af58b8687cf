"""Organisations, users, API tokens and web sessions."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import normalize_address
from postway.errors import AuthenticationFailed, Conflict, Forbidden, InvalidInput, NotFound
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
# A deactivated user's password hash is kept behind this marker: no argon2 hash starts with
# it, so no password matches, and reactivating restores the old password unchanged.
DEACTIVATED = "!deactivated!"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling; every query that touches user data is scoped by it."""

    user_id: str
    org_id: str
    email: str
    is_admin: bool


def principal_of(user: User) -> Principal:
    return Principal(user.id, user.org_id, user.email, user.is_admin)


def is_active(user: User) -> bool:
    return not user.password_hash.startswith(DEACTIVATED)


async def create_user(
    db: AsyncSession,
    email: str,
    password: str,
    *,
    admin: bool = False,
    org_name: str | None = None,
    org_id: str | None = None,
) -> User:
    """Create a user in `org_id` when given (an admin adding a colleague); otherwise the first
    user (or one naming a new org) founds an organisation."""
    email = normalize_address(email, field="email").lower()
    check_password(password)
    if await db.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"a user with the email {email} already exists")
    org = None
    if org_id is not None:
        org = await db.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"no organisation with id {org_id}")
    elif org_name is None:
        org = await db.scalar(select(Organisation).order_by(Organisation.created_at).limit(1))
    if org is None:
        org = Organisation(name=org_name or email.split("@", 1)[1], blocked_domains=[])
        db.add(org)
        await db.flush()
    user = User(org_id=org.id, email=email, password_hash=hash_password(password), is_admin=admin)
    db.add(user)
    await db.flush()
    return user


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password: use at least {MIN_PASSWORD} characters", field="password")


async def count_users(db: AsyncSession) -> int:
    return await db.scalar(select(func.count()).select_from(User)) or 0


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
    if row is None or row[1].startswith(DEACTIVATED):
        return None  # verified against the dummy hash like an unknown email
    return (row[0], row[1])


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


# last_used_at is written at most this often per token: a write per API call would make
# every request a write transaction (SQLite's single writer lock, a WAL frame each).
TOKEN_TOUCH_EVERY = timedelta(minutes=1)
NO_SUCH_TOKEN_WORDS = "the bearer token is unknown or revoked"  # noqa: S105 (words, not a secret)


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """Who a valid token belongs to, and when its use was last recorded."""

    principal: Principal
    token_id: str
    last_used_at: datetime | None

    def needs_touch(self, now: datetime) -> bool:
        return self.last_used_at is None or now - self.last_used_at >= TOKEN_TOUCH_EVERY


def _owner(row: ApiToken, user: User | None, now: datetime) -> TokenOwner:
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed("the bearer token has expired; create a new one")
    if user is None:
        raise AuthenticationFailed("the bearer token's user no longer exists")
    if not is_active(user):
        raise AuthenticationFailed("the bearer token's user is deactivated")
    return TokenOwner(principal_of(user), row.id, row.last_used_at)


async def owners_of_tokens(
    db: AsyncSession, hashes: Collection[str]
) -> dict[str, TokenOwner | AuthenticationFailed]:
    """For each token hash its owner, or why it is refused; one query for all. Reads only."""
    rows = await db.execute(
        select(ApiToken, User)
        .outerjoin(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash.in_(list(hashes)), ApiToken.revoked_at.is_(None))
    )
    now = utcnow()
    out: dict[str, TokenOwner | AuthenticationFailed] = {}
    for token, user in rows.all():
        try:
            out[token.token_hash] = _owner(token, user, now)
        except AuthenticationFailed as exc:
            out[token.token_hash] = exc
    return {h: out.get(h) or AuthenticationFailed(NO_SUCH_TOKEN_WORDS) for h in hashes}


async def touch_tokens(db: AsyncSession, token_ids: Collection[str], now: datetime) -> None:
    if token_ids:
        await db.execute(
            update(ApiToken).where(ApiToken.id.in_(list(token_ids))).values(last_used_at=now)
        )


async def user_for_token(db: AsyncSession, token: str) -> User:
    row = await db.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == token_hash(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise AuthenticationFailed(NO_SUCH_TOKEN_WORDS)
    now = utcnow()
    user = await db.get(User, row.user_id)
    owner = _owner(row, user, now)
    if owner.needs_touch(now):
        row.last_used_at = now
    assert user is not None  # _owner refuses a token without its user
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
    if user is None or not is_active(user):
        raise AuthenticationFailed("please log in")
    return user, row.csrf_token


async def end_web_session(db: AsyncSession, token: str) -> None:
    row = await db.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if row is not None:
        await db.delete(row)


# --- administering an organisation's users (web admin pages) ---------------------------------


async def list_users(db: AsyncSession, org_id: str) -> list[User]:
    rows = await db.scalars(select(User).where(User.org_id == org_id).order_by(User.email))
    return list(rows)


async def org_user(db: AsyncSession, org_id: str, user_id: str) -> User:
    """A user of the organisation, row-locked for a change; another organisation's user is
    reported as not found, never revealed."""
    user = await db.get(User, user_id, with_for_update=True)
    if user is None or user.org_id != org_id:
        raise NotFound(f"no user with id {user_id}")
    return user


async def _other_active_admins(db: AsyncSession, user: User) -> int:
    rows = await db.scalars(
        select(User.password_hash).where(
            User.org_id == user.org_id, User.is_admin.is_(True), User.id != user.id
        )
    )
    return sum(1 for h in rows if not h.startswith(DEACTIVATED))


async def set_role(db: AsyncSession, org_id: str, user_id: str, *, admin: bool) -> User:
    """Make a user an administrator or a member. The organisation keeps at least one active
    administrator: the last one cannot be made a member (Conflict)."""
    user = await org_user(db, org_id, user_id)
    if user.is_admin and not admin and not await _other_active_admins(db, user):
        raise Conflict(f"{user.email} is the only administrator; make someone else one first")
    user.is_admin = admin
    await db.flush()
    return user


async def _end_sessions(db: AsyncSession, user_id: str) -> None:
    await db.execute(delete(WebSession).where(WebSession.user_id == user_id))


async def deactivate_user(db: AsyncSession, org_id: str, user_id: str, by_user_id: str) -> User:
    """Stop a user from logging in or using the API: the password stops matching, web
    sessions end and API tokens are revoked (a token made later is refused too, see
    `user_for_token`). Mail already accepted for them is still delivered. An administrator
    cannot deactivate themselves (Forbidden)."""
    user = await org_user(db, org_id, user_id)
    if user.id == by_user_id:
        raise Forbidden("you cannot deactivate yourself; ask another administrator")
    if is_active(user):
        user.password_hash = DEACTIVATED + user.password_hash
    await _end_sessions(db, user.id)
    await db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await db.flush()
    return user


async def reactivate_user(db: AsyncSession, org_id: str, user_id: str) -> User:
    """Let a deactivated user log in again with their old password (tokens stay revoked)."""
    user = await org_user(db, org_id, user_id)
    user.password_hash = user.password_hash.removeprefix(DEACTIVATED)
    await db.flush()
    return user


def random_password() -> str:
    """20 URL-safe random characters (about 120 bits)."""
    return new_token("pw").removeprefix("pw_")[:20]


def new_password() -> tuple[str, str]:
    """(a random password, its argon2 hash). Blocking: run it in a thread, outside any
    transaction."""
    password = random_password()
    return password, hash_password(password)


async def reset_password(db: AsyncSession, org_id: str, user_id: str, password_hash: str) -> User:
    """Replace a user's password (the administrator shows the new one once; only its hash
    is kept) and end their web sessions; API tokens are separate credentials and stay."""
    user = await org_user(db, org_id, user_id)
    if not is_active(user):
        raise Conflict(f"{user.email} is deactivated; reactivate them first")
    user.password_hash = password_hash
    await _end_sessions(db, user.id)
    await db.flush()
    return user
