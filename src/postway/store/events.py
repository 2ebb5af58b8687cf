"""The append-only delivery history."""

from __future__ import annotations

from datetime import datetime
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


def event_row(
    delivery_id: str,
    org_id: str,
    type_: str,
    state: str,
    detail: dict[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    """One event as column values, for appending many in one INSERT (set-based changes)."""
    return {
        "delivery_id": delivery_id,
        "org_id": org_id,
        "type": type_,
        "state": state,
        "detail": {k: v for k, v in detail.items() if v is not None},
        "created_at": created_at,
    }
