"""Connected accounts (a rep's Gmail mailbox): their rows, the OAuth flows that create them,
and `StoredAccounts`, the `AccountAccess` that API channels use instead of the database.

Token refresh invariant: at most one refresh of an account's access token is under way at a
time across every worker process and machine. A worker claims the refresh with one
conditional UPDATE (compare-and-swap on `refreshing_until` and the access token it saw), so
the claim is atomic on SQLite and PostgreSQL alike, and no transaction (or row lock) is held
while Google is asked; the losers wait and read the token the winner stored. A claim left by
a worker that died lapses after `REFRESH_CLAIM`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import AccountNeedsReconnect, AccountStatus, AccountView
from postway.errors import ChannelError, Conflict, NotFound
from postway.security import SecretBox, token_hash
from postway.store.db import Database
from postway.store.models import AccountThread, ConnectedAccount, OAuthState, utcnow

log = logging.getLogger("postway.accounts")

REFRESH_MARGIN = timedelta(minutes=5)  # refresh this long before the token expires
REFRESH_CLAIM = timedelta(seconds=60)  # a refresh claim lapses after this
STATE_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class NewTokens:
    """Tokens from a code exchange or a refresh (refresh_token None: keep the stored one)."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime
    scopes: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never log tokens
        return f"NewTokens(expires_at={self.expires_at.isoformat()})"


# Asks the provider for a new access token; raises AccountNeedsReconnect when the grant is
# gone, ChannelError for a passing failure.
Refresher = Callable[[str], Awaitable[NewTokens]]


def view_of(row: ConnectedAccount) -> AccountView:
    return AccountView(
        id=row.id,
        user_id=row.user_id,
        provider=row.provider,
        address=row.address,
        status=row.status,
        paused_until=row.paused_until,
        reason=row.reason,
        send_as=tuple(row.send_as or ()),
        bounce_scanning=bool(row.bounce_scanning),
        version=row.version or 0,
    )


async def account_of(db: AsyncSession, user_id: str, provider: str) -> ConnectedAccount | None:
    return await db.scalar(
        select(ConnectedAccount).where(
            ConnectedAccount.user_id == user_id, ConnectedAccount.provider == provider
        )
    )


async def accounts_of(
    db: AsyncSession, user_ids: set[str], provider: str
) -> dict[str, ConnectedAccount]:
    """Each user's account with `provider`, in one query (user id -> row)."""
    if not user_ids:
        return {}
    rows = await db.scalars(
        select(ConnectedAccount).where(
            ConnectedAccount.user_id.in_(user_ids), ConnectedAccount.provider == provider
        )
    )
    return {r.user_id: r for r in rows}


async def save_connection(
    db: AsyncSession,
    box: SecretBox,
    *,
    org_id: str,
    user_id: str,
    provider: str,
    address: str,
    tokens: NewTokens,
    send_as: list[str],
    bounce_scanning: bool,
    replace: bool,
) -> tuple[ConnectedAccount, bool]:
    """Store a finished connection; returns the row and whether it reconnected the account
    the user already had (same address: its waiting mail may now go). Another address
    replaces the connected one only with `replace` (the user confirmed); otherwise Conflict.
    """
    row = await account_of(db, user_id, provider)
    now = utcnow()
    reconnected = row is not None and row.address.lower() == address.lower()
    if row is not None and not reconnected:
        if not replace:
            raise Conflict(
                f"{row.address} is connected already; connecting {address} replaces it "
                "(confirm with replace=true)"
            )
        await db.execute(delete(AccountThread).where(AccountThread.account_id == row.id))
        await db.delete(row)
        await db.flush()
        row = None
    if row is None:
        row = ConnectedAccount(
            org_id=org_id, user_id=user_id, provider=provider, version=0, created_at=now
        )
        db.add(row)
    row.address = address
    row.access_token_enc = box.encrypt(tokens.access_token)
    if tokens.refresh_token:
        row.refresh_token_enc = box.encrypt(tokens.refresh_token)
    row.token_expires_at = tokens.expires_at
    row.scopes = list(tokens.scopes)
    row.send_as = send_as
    row.status = AccountStatus.CONNECTED
    row.paused_until = None
    row.reason = None
    row.bounce_scanning = bounce_scanning
    row.refreshing_until = None
    row.version = (row.version or 0) + 1
    row.updated_at = now
    await db.flush()
    return row, reconnected


async def forget_account(db: AsyncSession, row: ConnectedAccount) -> None:
    """Delete the account and its tokens (the caller revoked the grant first)."""
    await db.execute(delete(AccountThread).where(AccountThread.account_id == row.id))
    await db.delete(row)
    await db.flush()


def tokens_of(row: ConnectedAccount, box: SecretBox) -> tuple[str | None, str | None]:
    """(access token, refresh token), decrypted, for revoking the grant."""
    access = box.decrypt(row.access_token_enc) if row.access_token_enc else None
    refresh = box.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None
    return access, refresh


# --- OAuth states ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartedFlow:
    user_id: str
    org_id: str
    verifier: str
    bounce_scanning: bool
    replace: bool

    def __repr__(self) -> str:
        return f"StartedFlow(user_id={self.user_id!r})"


async def start_flow(
    db: AsyncSession,
    box: SecretBox,
    *,
    user_id: str,
    org_id: str,
    provider: str,
    verifier: str,
    session_token: str | None,
    bounce_scanning: bool,
    replace: bool,
) -> str:
    """Record a started connect flow; returns the random `state` value for the provider."""
    now = utcnow()
    # expired flows of anyone are cleared as new ones start, so the table stays small
    await db.execute(delete(OAuthState).where(OAuthState.expires_at < now))
    state = secrets.token_urlsafe(32)
    db.add(
        OAuthState(
            state_hash=token_hash(state),
            user_id=user_id,
            org_id=org_id,
            provider=provider,
            verifier_enc=box.encrypt(verifier),
            session_hash=token_hash(session_token) if session_token else None,
            bounce_scanning=bounce_scanning,
            replace=replace,
            expires_at=now + STATE_LIFETIME,
            created_at=now,
        )
    )
    await db.flush()
    return state


def flow_refused() -> NotFound:
    """One message for every refused callback, so a guess learns nothing."""
    return NotFound(
        "this connect link is unknown, used or expired (links last 10 minutes); "
        "start connecting again"
    )


async def take_flow(
    db: AsyncSession, box: SecretBox, *, state: str, provider: str, session_token: str | None
) -> StartedFlow | None:
    """The flow `state` names, used up by this call (single use, even when refused), or
    None when refused: unknown, used, expired, for another provider, or started from a
    browser session other than the one finishing it. The caller commits, then raises
    `flow_refused()` for None (raising inside the transaction would undo the use)."""
    if not state or len(state) > 200:
        return None
    deleted = await db.execute(
        delete(OAuthState)
        .where(OAuthState.state_hash == token_hash(state))
        .returning(OAuthState)
    )
    row = deleted.scalars().first()
    if row is None or row.provider != provider or row.expires_at <= utcnow():
        return None
    if row.session_hash is not None and (
        session_token is None or token_hash(session_token) != row.session_hash
    ):
        return None
    return StartedFlow(
        row.user_id, row.org_id, box.decrypt(row.verifier_enc), row.bounce_scanning, row.replace
    )


# --- what channels use ------------------------------------------------------------------------


class StoredAccounts:
    """`AccountAccess` backed by the database; handed to API channels by the runtime."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        refreshers: dict[str, Refresher],
        *,
        margin: timedelta = REFRESH_MARGIN,
        claim: timedelta = REFRESH_CLAIM,
        wait_step: float = 0.1,
    ) -> None:
        self.db = db
        self.box = box
        self.refreshers = refreshers
        self.margin = margin
        self.claim = claim
        self.wait_step = wait_step

    async def view(self, account_id: str) -> AccountView | None:
        async with self.db.reader() as s, s.begin():
            row = await s.get(ConnectedAccount, account_id)
            return view_of(row) if row is not None else None

    async def fresh_token(self, account_id: str, refused: str | None = None) -> str:
        """See the module docstring for the one-refresh-at-a-time invariant. `refused`: an
        access token the provider just refused (401) though not near its expiry; it is
        refreshed anyway, unless another worker has replaced it meanwhile."""
        deadline = utcnow() + self.claim + timedelta(seconds=30)
        while True:
            async with self.db.reader() as s, s.begin():
                row = await s.get(ConnectedAccount, account_id)
                if row is None:
                    raise AccountNeedsReconnect("the account was disconnected")
                if row.status == AccountStatus.NEEDS_RECONNECT:
                    raise AccountNeedsReconnect(row.reason or "the account must be reconnected")
                seen_access, expires, provider = (
                    row.access_token_enc,
                    row.token_expires_at,
                    row.provider,
                )
                refresh_enc = row.refresh_token_enc
                busy_until = row.refreshing_until
            now = utcnow()
            if seen_access and expires is not None and expires - self.margin > now:
                token = self.box.decrypt(seen_access)
                if token != refused:
                    return token
            free = busy_until is None or busy_until <= now
            if free and await self._claim(account_id, seen_access, now):
                return await self._refresh(account_id, provider, refresh_enc)
            if now > deadline:
                raise ChannelError("the account's token refresh did not finish; retried later")
            await asyncio.sleep(self.wait_step)  # another worker is refreshing: read its token

    async def _claim(self, account_id: str, seen_access: str | None, now: datetime) -> bool:
        same_token = (
            ConnectedAccount.access_token_enc.is_(None)
            if seen_access is None
            else ConnectedAccount.access_token_enc == seen_access
        )
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                update(ConnectedAccount)
                .where(
                    ConnectedAccount.id == account_id,
                    ConnectedAccount.status != AccountStatus.NEEDS_RECONNECT,
                    same_token,
                    or_(
                        ConnectedAccount.refreshing_until.is_(None),
                        ConnectedAccount.refreshing_until <= now,
                    ),
                )
                .values(refreshing_until=now + self.claim)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _refresh(self, account_id: str, provider: str, refresh_enc: str | None) -> str:
        refresher = self.refreshers.get(provider)
        try:
            if refresh_enc is None:
                raise AccountNeedsReconnect("no refresh token is stored; connect the account again")
            if refresher is None:
                raise ChannelError(f"no token refresh is configured for {provider}")
            tokens = await refresher(self.box.decrypt(refresh_enc))
        except AccountNeedsReconnect as exc:
            await self.mark_needs_reconnect(account_id, str(exc))
            raise
        except BaseException:
            await self._release_claim(account_id)
            raise
        values: dict[str, object] = {
            "access_token_enc": self.box.encrypt(tokens.access_token),
            "token_expires_at": tokens.expires_at,
            "refreshing_until": None,
            "updated_at": utcnow(),
        }
        if tokens.refresh_token:
            values["refresh_token_enc"] = self.box.encrypt(tokens.refresh_token)
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(ConnectedAccount)
                .where(ConnectedAccount.id == account_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        log.info("refreshed the access token of account %s", account_id)
        return tokens.access_token

    async def _release_claim(self, account_id: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(ConnectedAccount)
                .where(ConnectedAccount.id == account_id)
                .values(refreshing_until=None)
                .execution_options(synchronize_session=False)
            )

    async def _set_state(self, account_id: str, **values: object) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(ConnectedAccount)
                .where(ConnectedAccount.id == account_id)
                .values(
                    version=ConnectedAccount.version + 1, updated_at=utcnow(), **values
                )
                .execution_options(synchronize_session=False)
            )

    async def mark_needs_reconnect(self, account_id: str, reason: str) -> None:
        log.warning("account %s needs to be reconnected: %s", account_id, reason)
        await self._set_state(
            account_id,
            status=AccountStatus.NEEDS_RECONNECT,
            reason=reason,
            paused_until=None,
            refreshing_until=None,
        )

    async def pause_until(self, account_id: str, until: datetime, reason: str) -> None:
        log.warning("account %s paused until %s: %s", account_id, until.isoformat(), reason)
        async with self.db.session() as s, s.begin():
            row = await s.get(ConnectedAccount, account_id)
            if row is None or row.status == AccountStatus.NEEDS_RECONNECT:
                return  # reconnecting matters more than waiting for a quota
            if row.paused_until is not None and row.paused_until >= until:
                return  # another worker paused it already, as long or longer
            row.status = AccountStatus.PAUSED
            row.paused_until = until
            row.reason = reason
            row.version = (row.version or 0) + 1
            row.updated_at = utcnow()

    async def resume_if_due(self, account_id: str, now: datetime) -> bool:
        """End a pause whose time has passed; True when this call ended it."""
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                update(ConnectedAccount)
                .where(
                    ConnectedAccount.id == account_id,
                    ConnectedAccount.status == AccountStatus.PAUSED,
                    ConnectedAccount.paused_until <= now,
                )
                .values(
                    status=AccountStatus.CONNECTED,
                    paused_until=None,
                    reason=None,
                    version=ConnectedAccount.version + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def thread_of(self, account_id: str, message_ids: list[str]) -> str | None:
        if not message_ids:
            return None
        async with self.db.reader() as s, s.begin():
            rows = await s.execute(
                select(AccountThread.message_id_header, AccountThread.thread_id).where(
                    AccountThread.account_id == account_id,
                    AccountThread.message_id_header.in_(message_ids),
                )
            )
            found = dict(rows.all())
        return next((found[m] for m in message_ids if m in found), None)

    async def remember_thread(self, account_id: str, message_id: str, thread_id: str) -> None:
        async with self.db.session() as s, s.begin():
            if await s.get(AccountThread, (account_id, message_id)) is None:
                s.add(
                    AccountThread(
                        account_id=account_id,
                        message_id_header=message_id,
                        thread_id=thread_id,
                        created_at=utcnow(),
                    )
                )
