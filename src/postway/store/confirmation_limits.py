"""Limits on identity confirmation mails: per user an hour and per target address a day, so
the confirmation flow cannot be used to mail strangers over and over."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from postway.config import Settings
from postway.errors import RateLimited
from postway.store.models import ConfirmationMail
from postway.store.users import Principal

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)  # the longest window: older rows count for nothing


async def _serialize(db: AsyncSession, name: str) -> None:
    """Hold a lock named `name` until the transaction ends, so two requests cannot both count
    below a limit and both send. SQLite needs none: its write transactions begin IMMEDIATE
    and so run one at a time."""
    if db.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _when(at: datetime, now: datetime) -> tuple[str, int]:
    wait = max(1, int((at - now).total_seconds() + 0.999))
    minutes = -(-wait // 60)
    plural = "s" if minutes != 1 else ""
    return f"after {at.strftime('%H:%M UTC')} (in about {minutes} minute{plural})", wait


async def _check(
    db: AsyncSession,
    column: InstrumentedAttribute[str],
    value: str,
    limit: int,
    window: timedelta,
    now: datetime,
) -> datetime | None:
    """When the next mail may go, or None if one may go now. Rows older than the longest
    window are deleted on the way: they no longer count for anything."""
    await db.execute(
        delete(ConfirmationMail).where(column == value, ConfirmationMail.sent_at <= now - DAY)
    )
    count, oldest = (
        await db.execute(
            select(func.count(), func.min(ConfirmationMail.sent_at)).where(
                column == value,
                ConfirmationMail.sent_at > now - window,
            )
        )
    ).one()
    if count < limit:
        return None
    if count == limit:
        return oldest + window  # type: ignore[no-any-return]
    # over the limit (it was lowered): wait until enough of the counted mails leave the window
    times = await db.scalars(
        select(ConfirmationMail.sent_at)
        .where(column == value, ConfirmationMail.sent_at > now - window)
        .order_by(ConfirmationMail.sent_at)
        .limit(count - limit + 1)
    )
    return list(times)[-1] + window


async def count_confirmation_mail(
    db: AsyncSession, settings: Settings, who: Principal, address: str, now: datetime
) -> None:
    """Record one confirmation mail from `who` to `address`, or raise RateLimited (saying
    when to try again) if it would pass `confirmations_per_user_hour` or
    `confirmations_per_address_day`. Call inside the transaction that queues the mail."""
    address = address.strip().lower()
    await _serialize(db, f"confirmations-user:{who.user_id}")
    await _serialize(db, f"confirmations-address:{address}")
    per_user = settings.confirmations_per_user_hour
    at = await _check(db, ConfirmationMail.user_id, who.user_id, per_user, HOUR, now)
    if at is not None:
        words, wait = _when(at, now)
        raise RateLimited(
            f"too many confirmation mails: at most {per_user} an hour; send the next {words}",
            retry_after=wait,
        )
    per_address = settings.confirmations_per_address_day
    at = await _check(db, ConfirmationMail.address, address, per_address, DAY, now)
    if at is not None:
        words, wait = _when(at, now)
        raise RateLimited(
            f"too many confirmation mails to {address}: at most {per_address} a day; "
            f"send the next {words}",
            retry_after=wait,
        )
    db.add(ConfirmationMail(org_id=who.org_id, user_id=who.user_id, address=address, sent_at=now))
    await db.flush()
