"""Read side of messages: status, events, conversations and failed deliveries, per owner."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.errors import NotFound
from postway.store.models import Delivery, DeliveryEvent, Message
from postway.store.users import Principal

FAILED_STATES = ("bounced", "failed")


async def get_message(db: AsyncSession, who: Principal, message_id: str) -> Message:
    row = await db.get(Message, message_id)
    if row is None or row.user_id != who.user_id or row.kind != "user":
        raise NotFound(f"no message with id {message_id}")
    return row


async def deliveries_of(db: AsyncSession, message_id: str) -> list[Delivery]:
    return (await deliveries_of_many(db, [message_id])).get(message_id, [])


async def deliveries_of_many(db: AsyncSession, message_ids: list[str]) -> dict[str, list[Delivery]]:
    """Deliveries of several messages in one query (a page of the message list)."""
    out: dict[str, list[Delivery]] = defaultdict(list)
    if not message_ids:
        return out
    rows = await db.scalars(
        select(Delivery)
        .where(Delivery.message_id.in_(message_ids))
        .order_by(Delivery.created_at, Delivery.id)
    )
    for d in rows:
        out[d.message_id].append(d)
    return out


async def events_of(db: AsyncSession, delivery_ids: list[str]) -> dict[str, list[DeliveryEvent]]:
    out: dict[str, list[DeliveryEvent]] = defaultdict(list)
    if not delivery_ids:
        return out
    rows = await db.scalars(
        select(DeliveryEvent)
        .where(DeliveryEvent.delivery_id.in_(delivery_ids))
        .order_by(DeliveryEvent.id)
    )
    for e in rows:
        out[e.delivery_id].append(e)
    return out


async def list_messages(
    db: AsyncSession, who: Principal, limit: int, offset: int
) -> tuple[list[Message], int]:
    base = select(Message).where(Message.user_id == who.user_id, Message.kind == "user")
    total = await db.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = await db.scalars(
        base.order_by(Message.created_at.desc(), Message.id).limit(limit).offset(offset)
    )
    return list(rows), total


async def failed_deliveries(
    db: AsyncSession, who: Principal, limit: int, offset: int
) -> tuple[list[tuple[Delivery, Message]], int]:
    """Bounced or failed deliveries of the caller's mail, newest failure first."""
    cond = (
        (Delivery.user_id == who.user_id)
        & Delivery.state.in_(FAILED_STATES)
        & (Message.kind == "user")
    )
    total = (
        await db.scalar(select(func.count()).select_from(Delivery).join(Message).where(cond)) or 0
    )
    rows = await db.execute(
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(cond)
        .order_by(Delivery.updated_at.desc(), Delivery.id)
        .limit(limit)
        .offset(offset)
    )
    return [(d, m) for d, m in rows.all()], total


async def conversations(
    db: AsyncSession, who: Principal, limit: int, offset: int
) -> tuple[list[dict[str, object]], int]:
    """One row per recipient the caller has written to, newest activity first, with the state
    of the latest message to them."""
    latest = (
        select(
            func.lower(Delivery.recipient).label("addr"),
            func.max(Delivery.created_at).label("last_at"),
            func.count().label("messages"),
        )
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.user_id == who.user_id, Message.kind == "user")
        .group_by(func.lower(Delivery.recipient))
        .subquery()
    )
    total = await db.scalar(select(func.count()).select_from(latest)) or 0
    heads = (
        await db.execute(
            select(latest.c.addr, latest.c.last_at, latest.c.messages)
            .order_by(latest.c.last_at.desc(), latest.c.addr)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    out: list[dict[str, object]] = []
    for addr, _last_at, count in heads:
        d, m = (
            await db.execute(
                select(Delivery, Message)
                .join(Message, Message.id == Delivery.message_id)
                .where(
                    Delivery.user_id == who.user_id,
                    func.lower(Delivery.recipient) == addr,
                    Message.kind == "user",
                )
                .order_by(Delivery.created_at.desc(), Delivery.id.desc())
                .limit(1)
            )
        ).one()
        out.append(
            {
                "recipient": d.recipient,
                "messages": count,
                "last_subject": m.subject,
                "last_message_id": m.id,
                "last_at": d.created_at,
                "latest_state": d.state,
                "latest_reason": d.reason,
            }
        )
    return out, total


async def conversation(
    db: AsyncSession, who: Principal, address: str
) -> list[tuple[Delivery, Message]]:
    rows = await db.execute(
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(
            Delivery.user_id == who.user_id,
            func.lower(Delivery.recipient) == address.lower(),
            Message.kind == "user",
        )
        .order_by(Delivery.created_at.desc())
    )
    found = [(d, m) for d, m in rows.all()]
    if not found:
        raise NotFound(f"no conversation with {address}")
    return found
