"""Counters of failed logins per account and per client address, and the locks they earn.

An attempt is counted as a failure *before* its password is checked (and uncounted if it
turns out right), so guesses sent in parallel cannot all pass the lock check at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.domain.lockout import LockPolicy, lock_for, still_counted
from postway.store.models import LoginThrottle

Counter = tuple[str, LockPolicy]


def policies(settings: Settings) -> tuple[LockPolicy, LockPolicy]:
    """(per account, per client address)."""
    common = {
        "lock_seconds": settings.login_lock_seconds,
        "lock_max_seconds": settings.login_lock_max_seconds,
        "window_seconds": settings.login_failure_window_seconds,
    }
    return (
        LockPolicy(max_failures=settings.login_max_failures, **common),
        LockPolicy(max_failures=settings.login_max_failures_per_address, **common),
    )


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def account_key(email: str) -> str:
    """Counted for whatever email was typed, known or not, so a lock tells nothing either."""
    return _key("account", email.strip().lower())


def address_key(host: str | None) -> str:
    """A client address; IPv6 clients by their /64, which one subscriber usually holds whole."""
    value = host or "unknown"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return _key("address", value)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _key("address", str(ip.ipv4_mapped))
        return _key("address", str(ipaddress.ip_network(f"{ip}/64", strict=False)))
    return _key("address", str(ip))


async def _row_for_update(db: AsyncSession, key: str, now: datetime) -> LoginThrottle:
    """The counter's row, created if missing, locked until the transaction ends (on SQLite
    every write transaction already holds the database lock: BEGIN IMMEDIATE)."""
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    await db.execute(
        dialect.insert(LoginThrottle)
        .values(key=key, failures=0, locked_until=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    row = await db.scalar(
        select(LoginThrottle)
        .where(LoginThrottle.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None  # inserted above if it was missing
    return row


async def begin_attempt(
    db: AsyncSession, counters: Sequence[Counter], now: datetime
) -> datetime | None:
    """Refuse or count a login attempt.

    Returns the time until which one of the counters is locked (the attempt is refused and
    not counted), or None once the attempt is counted as a failure on every counter, locking
    any that reached its limit. Callers pass counters in one fixed order (account, then
    address), so two attempts never wait on each other's rows in a cycle.
    """
    rows = [(await _row_for_update(db, key, now), policy) for key, policy in counters]
    locks = [r.locked_until for r, _ in rows if r.locked_until and r.locked_until > now]
    if locks:
        return max(locks)
    for row, policy in rows:
        if not still_counted(policy, row.updated_at, now):
            row.failures = 0
        row.failures += 1
        lock = lock_for(policy, row.failures)
        row.locked_until = now + lock if lock else None
        row.updated_at = now
    await db.flush()
    return None


async def attempt_succeeded(
    db: AsyncSession, account: str, address: Counter, now: datetime
) -> None:
    """The right password: the account starts afresh; the client address has its one
    pessimistic count taken back (other failures from there still count)."""
    row = await _row_for_update(db, account, now)
    row.failures, row.locked_until, row.updated_at = 0, None, now
    key, policy = address
    addr = await _row_for_update(db, key, now)
    addr.failures = max(0, addr.failures - 1)
    if lock_for(policy, addr.failures) is None:
        addr.locked_until = None
    await db.flush()


async def forget_stale(db: AsyncSession, window: timedelta, now: datetime) -> None:
    """Delete counters idle past the window and not locked (rows others hold are skipped)."""
    stale = (
        select(LoginThrottle.key)
        .where(
            LoginThrottle.updated_at < now - window,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
        .limit(500)
        .with_for_update(skip_locked=True)
    )
    await db.execute(
        delete(LoginThrottle)
        .where(LoginThrottle.key.in_(stale))
        .execution_options(synchronize_session=False)
    )
