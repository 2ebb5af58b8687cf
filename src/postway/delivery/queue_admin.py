"""Operating the queue by hand: list, show, retry now, resend a failed recipient, purge."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.domain.states import DeliveryState
from postway.errors import Conflict, InvalidInput, NotFound
from postway.store.events import append_event
from postway.store.models import Delivery, utcnow

STATES = [s.value for s in DeliveryState]
RETRYABLE = (DeliveryState.QUEUED.value, DeliveryState.DEFERRED.value)
RESENDABLE = (DeliveryState.FAILED.value, DeliveryState.BOUNCED.value)


async def list_deliveries(
    db: AsyncSession, state: str | None, limit: int, *, org_id: str | None = None
) -> list[Delivery]:
    stmt = select(Delivery)
    if state:
        if state not in STATES:
            raise InvalidInput(f"state: use one of {', '.join(STATES)}", field="state")
        stmt = stmt.where(Delivery.state == state)
    else:
        stmt = stmt.where(Delivery.due_at.is_not(None))
    if org_id is not None:
        stmt = stmt.where(Delivery.org_id == org_id)
    return list(await db.scalars(stmt.order_by(Delivery.due_at, Delivery.created_at).limit(limit)))


async def get_delivery(
    db: AsyncSession, delivery_id: str, *, user_id: str | None = None
) -> Delivery:
    d = await db.get(Delivery, delivery_id)
    if d is None or (user_id is not None and d.user_id != user_id):
        raise NotFound(f"no delivery with id {delivery_id}")
    return d


def retry_now(db: AsyncSession, d: Delivery, settings: Settings, who: str) -> None:
    """Queued or deferred: try now. Failed or bounced: send again with a fresh lifetime (e.g.
    after a quota pause or a fixed relay). Delivered and sent mail is never resent."""
    now = utcnow()
    if d.state in RETRYABLE:
        d.due_at = now
        append_event(db, d, "retry-requested", by=who)
        return
    if d.state not in RESENDABLE:
        raise Conflict(
            f"delivery {d.id} is {d.state}; only failed, bounced, queued or deferred "
            "deliveries can be retried"
        )
    d.state = DeliveryState.QUEUED.value
    d.due_at = now
    d.expires_at = now + timedelta(seconds=settings.queue_lifetime_seconds)
    d.lease_owner = None
    d.updated_at = now
    append_event(db, d, "requeued", by=who)


def purge(db: AsyncSession, d: Delivery, who: str) -> None:
    """Take a waiting delivery out of the queue; it is marked failed, never silently dropped."""
    if d.state not in RETRYABLE:
        raise Conflict(f"delivery {d.id} is {d.state}; only queued or deferred can be purged")
    d.state = DeliveryState.FAILED.value
    d.reason = "purged"
    d.diagnostic = f"removed from the queue by {who}"
    d.due_at = None
    d.lease_owner = None
    d.updated_at = utcnow()
    append_event(db, d, "failed", by=who, reason="purged")
