"""Operating the queue by hand: list, show, retry now, resend a failed recipient, purge.

The state changes themselves are `transitions.RetryNow`, `Resend` and `Purge`; see
`transitions.transition` for what each does to a delivery a worker is holding.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.delivery.transitions import (
    RESENDABLE,
    Purge,
    Resend,
    RetryNow,
    transition,
)
from postway.domain.states import DeliveryState
from postway.errors import InvalidInput, NotFound
from postway.store.models import Delivery, utcnow

STATES = [s.value for s in DeliveryState]


async def list_deliveries(
    db: AsyncSession,
    state: str | None,
    limit: int,
    *,
    org_id: str | None = None,
    lock: bool = False,
) -> list[Delivery]:
    """Deliveries in `state` (or all still waiting), due first. `lock` takes their row locks
    (PostgreSQL) for a caller about to change them, so no claim slips in between."""
    stmt = select(Delivery)
    if state:
        if state not in STATES:
            raise InvalidInput(f"state: use one of {', '.join(STATES)}", field="state")
        stmt = stmt.where(Delivery.state == state)
    else:
        stmt = stmt.where(Delivery.due_at.is_not(None))
    if org_id is not None:
        stmt = stmt.where(Delivery.org_id == org_id)
    if lock:
        stmt = stmt.with_for_update()
    return list(await db.scalars(stmt.order_by(Delivery.due_at, Delivery.created_at).limit(limit)))


async def get_delivery(
    db: AsyncSession, delivery_id: str, *, user_id: str | None = None
) -> Delivery:
    """One delivery, row-locked on PostgreSQL (callers change it next: a worker's claim must
    not land between this read and the write; SQLite's BEGIN IMMEDIATE already serialises)."""
    d = await db.get(Delivery, delivery_id, with_for_update=True)
    if d is None or (user_id is not None and d.user_id != user_id):
        raise NotFound(f"no delivery with id {delivery_id}")
    return d


def retry_now(db: AsyncSession, d: Delivery, settings: Settings, who: str) -> None:
    """Queued or deferred: try now (a delivery a worker holds is being tried: that attempt is
    the retry). Failed or bounced: send again with a fresh lifetime (e.g. after a quota pause
    or a fixed relay). Delivered and sent mail is never resent (Conflict)."""
    now = utcnow()
    if d.state in RESENDABLE:
        expires = now + timedelta(seconds=settings.queue_lifetime_seconds)
        transition(db, d, Resend(who, expires), now=now)
    else:
        transition(db, d, RetryNow(who), now=now)


def purge(db: AsyncSession, d: Delivery, who: str) -> None:
    """Take a waiting delivery out of the queue; it is marked failed, never silently dropped.
    Refused (Conflict) while a worker is sending it."""
    transition(db, d, Purge(who), now=utcnow())
