"""The append-only delivery history."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postway.store.models import Delivery, DeliveryEvent, utcnow


def append_event(db: AsyncSession, delivery: Delivery, type_: str, **detail: Any) -> DeliveryEvent:
    event = DeliveryEvent(
        delivery_id=delivery.id,
        org_id=delivery.org_id,
        type=type_,
        state=delivery.state,
        detail={k: v for k, v in detail.items() if v is not None},
        created_at=utcnow(),
    )
    db.add(event)
    return event
