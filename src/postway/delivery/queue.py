"""The durable delivery queue: the deliveries table, claimed with leases.

A claim moves `due_at` to the lease expiry and stamps `lease_owner`; results are written only
where `lease_owner` still matches (fencing), so a worker that lost its lease cannot overwrite the
work of the one that took over. On PostgreSQL claims use FOR UPDATE SKIP LOCKED, so many workers
on many machines share one queue; on SQLite BEGIN IMMEDIATE makes the claim single-writer.
Only the lease lives here (claim, renew); every change of state is `transitions.transition`.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postway.store.models import Delivery


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def claim_due(
    db: AsyncSession,
    worker_id: str,
    now: datetime,
    limit: int,
    lease_seconds: float,
    *,
    postgres: bool,
) -> list[Delivery]:
    """Claim up to `limit` due deliveries, oldest due first. The caller commits."""
    due = select(Delivery.id).where(Delivery.due_at <= now).order_by(Delivery.due_at).limit(limit)
    if postgres:
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(
            due_at=now + timedelta(seconds=lease_seconds),
            lease_owner=worker_id,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery)
        .execution_options(synchronize_session=False)
    )
    return list((await db.scalars(stmt)).all())


async def renew(
    db: AsyncSession, worker_id: str, ids: list[str], now: datetime, lease_seconds: float
) -> int:
    """Extend this worker's leases on `ids` it still holds (a heartbeat while it works), so a
    slow delivery is not taken over and sent twice. Returns how many were extended."""
    result = await db.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.lease_owner == worker_id)
        .values(due_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def release(db: AsyncSession, worker_id: str, ids: list[str], now: datetime) -> int:
    """Give back deliveries this worker claimed but could not attempt (the database went
    away mid-batch): due again now, the claim's attempt not counted."""
    if not ids:
        return 0
    result = await db.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.lease_owner == worker_id)
        .values(due_at=now, lease_owner=None, attempts=Delivery.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(slots=True)
class Held:
    """A delivery as its lease holder reads it to record a result: plain columns, no ORM
    identity (the result is written by `transitions.transition_many` in Core statements)."""

    id: str
    message_id: str
    org_id: str
    recipient: str
    channel: str
    state: str
    reason: str | None
    status: str | None
    reply_code: int | None
    diagnostic: str | None
    remote_mta: str | None
    hard: bool | None
    attempts: int
    due_at: datetime | None
    lease_owner: str | None
    expires_at: datetime
    updated_at: datetime


_HELD_COLUMNS = [Delivery.__table__.c[name] for name in Held.__slots__]  # type: ignore[attr-defined]


async def held(db: AsyncSession, worker_id: str, ids: list[str], *, postgres: bool) -> list[Held]:
    """The deliveries among `ids` this worker still holds, locked for the result write (on
    SQLite the caller's BEGIN IMMEDIATE holds the whole database)."""
    stmt = select(*_HELD_COLUMNS).where(Delivery.id.in_(ids), Delivery.lease_owner == worker_id)
    if postgres:
        stmt = stmt.with_for_update()
    return [Held(*row) for row in (await db.execute(stmt)).all()]


async def depth_by_state(db: AsyncSession) -> dict[str, int]:
    rows = await db.execute(
        select(Delivery.state, func.count())
        .where(Delivery.due_at.is_not(None))
        .group_by(Delivery.state)
    )
    return {state: count for state, count in rows.all()}
