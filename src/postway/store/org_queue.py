"""The organisation's delivery queue as its administrators see it on the web: what waits
(queued, deferred) and what failed, with the next attempt and the last answer. Changes go
through `delivery.queue_admin` (and so `delivery.transitions`), never from here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.errors import InvalidInput
from postway.store.models import Delivery, Message

# view -> the states it shows
VIEWS: dict[str, tuple[str, ...]] = {
    "waiting": ("queued", "deferred"),
    "deferred": ("deferred",),
    "failed": ("failed", "bounced"),
}


@dataclass(frozen=True, slots=True)
class QueueRow:
    delivery: Delivery
    from_address: str
    subject: str


async def queue_view(
    db: AsyncSession, org_id: str, view: str, limit: int, offset: int
) -> tuple[list[QueueRow], int]:
    """Deliveries of the organisation in `view`, and how many in all: waiting ones by next
    attempt (soonest first), failed ones newest first."""
    states = VIEWS.get(view)
    if states is None:
        raise InvalidInput(f"view: use one of {', '.join(VIEWS)}", field="view")
    where = (Delivery.org_id == org_id, Delivery.state.in_(states))
    total = await db.scalar(select(func.count()).select_from(Delivery).where(*where)) or 0
    order = (
        (Delivery.updated_at.desc(), Delivery.id)
        if view == "failed"
        else (Delivery.due_at, Delivery.created_at, Delivery.id)
    )
    rows = await db.execute(
        select(Delivery, Message.from_address, Message.subject)
        .join(Message, Message.id == Delivery.message_id)
        .where(*where)
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )
    return [QueueRow(d, f, s) for d, f, s in rows.all()], total
