"""Persisting per-mailbox throttle windows; the arithmetic is in domain.throttle."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.throttle import Limits, Window, admit
from postway.store.models import ThrottleWindow


async def reserve(
    db: AsyncSession,
    mailbox: str,
    org_id: str,
    limits: Limits,
    wanted: int,
    now: datetime,
    *,
    postgres: bool,
) -> tuple[int, datetime | None]:
    """Take up to `wanted` sends from the mailbox's allowance; the row is locked for the
    read-modify-write so concurrent workers never overspend it."""
    insert = pg_insert if postgres else sqlite_insert
    await db.execute(
        insert(ThrottleWindow)
        .values(mailbox=mailbox, org_id=org_id, day_count=0, minute_count=0, batch_count=0)
        .on_conflict_do_nothing(index_elements=["mailbox"])
    )
    stmt = select(ThrottleWindow).where(ThrottleWindow.mailbox == mailbox)
    if postgres:
        stmt = stmt.with_for_update()
    row = await db.scalar(stmt)
    if row is None:  # inserted above or by a concurrent worker; never missing here
        raise RuntimeError(f"throttle window for {mailbox} vanished")
    w = Window(
        row.day_start,
        row.day_count or 0,
        row.minute_start,
        row.minute_count or 0,
        row.batch_count or 0,
        row.paused_until,
    )
    allowed, retry_at = admit(limits, w, wanted, now)
    row.day_start, row.day_count = w.day_start, w.day_count
    row.minute_start, row.minute_count = w.minute_start, w.minute_count
    row.batch_count, row.paused_until = w.batch_count, w.paused_until
    return allowed, retry_at
