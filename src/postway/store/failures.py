"""Failed Deliveries as a person works through them: filters, search, paging, what may be
resent (and why not), lifting a suppression, and "new since you last looked".

Every query is scoped to the caller's own user mail (`Message.kind == "user"`), like
`store.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, ForeignKey, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from postway.delivery.pipeline import check_blocked_domain
from postway.store.messages import FAILED_STATES
from postway.store.models import (
    Base,
    Delivery,
    Id,
    Message,
    Organisation,
    Suppression,
    UTCDateTime,
)
from postway.store.users import Principal


class FailedSeen(Base):
    """When each user last opened Failed Deliveries (migration 0008): failures that changed
    after it are counted as new in the tab's badge."""

    __tablename__ = "failed_seen"
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class FailureFilter:
    """What the person asked to see; empty strings mean "any"."""

    state: str = ""
    reason: str = ""
    channel: str = ""
    address: str = ""  # part of the recipient's address, any case

    def clean(self) -> FailureFilter:
        """Unknown states are dropped (the list would be empty for no visible reason); the
        rest is trimmed and bounded."""
        state = self.state if self.state in FAILED_STATES else ""
        return FailureFilter(
            state, self.reason.strip()[:64], self.channel.strip()[:16], self.address.strip()[:320]
        )


def _conditions(who: Principal, f: FailureFilter) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = [
        Delivery.user_id == who.user_id,
        Delivery.state.in_((f.state,) if f.state else FAILED_STATES),
        Message.kind == "user",
    ]
    if f.reason:
        cond.append(Delivery.reason == f.reason)
    if f.channel:
        cond.append(Delivery.channel == f.channel)
    if f.address:
        cond.append(func.lower(Delivery.recipient).contains(f.address.lower(), autoescape=True))
    return cond


async def search_failures(
    db: AsyncSession, who: Principal, f: FailureFilter, limit: int, offset: int
) -> tuple[list[tuple[Delivery, Message]], int]:
    """The caller's bounced or failed deliveries matching `f`, newest failure first."""
    cond = _conditions(who, f)
    total = (
        await db.scalar(select(func.count()).select_from(Delivery).join(Message).where(*cond))
        or 0
    )
    rows = await db.execute(
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(*cond)
        .order_by(Delivery.updated_at.desc(), Delivery.id)
        .limit(limit)
        .offset(offset)
    )
    return [(d, m) for d, m in rows.all()], total


async def failure_facets(db: AsyncSession, who: Principal) -> tuple[list[str], list[str]]:
    """The reasons and channels that occur among the caller's failures (for the filters)."""
    cond = _conditions(who, FailureFilter())
    base = select(Delivery.reason, Delivery.channel).join(Message).where(*cond).distinct()
    pairs = (await db.execute(base)).all()
    reasons = sorted({r for r, _ in pairs if r})
    channels = sorted({c for _, c in pairs if c})
    return reasons, channels


# --- "new since you last looked" -------------------------------------------------------------


async def last_seen(db: AsyncSession, who: Principal) -> datetime | None:
    return await db.scalar(select(FailedSeen.seen_at).where(FailedSeen.user_id == who.user_id))


async def count_new(db: AsyncSession, who: Principal, since: datetime | None) -> int:
    """Failures that changed after `since` (all of them when the tab was never opened)."""
    cond = _conditions(who, FailureFilter())
    if since is not None:
        cond.append(Delivery.updated_at > since)
    count = select(func.count()).select_from(Delivery).join(Message).where(*cond)
    return await db.scalar(count) or 0


async def mark_seen(db: AsyncSession, who: Principal, now: datetime) -> None:
    """Record that the caller opened the tab now; one row per user, written as an upsert so
    two tabs opening at once cannot collide on the key."""
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(FailedSeen).values(user_id=who.user_id, seen_at=now)
    await db.execute(
        stmt.on_conflict_do_update(index_elements=["user_id"], set_={"seen_at": now})
    )


# --- what may be done with a failure ---------------------------------------------------------


async def suppressed_addresses(db: AsyncSession, org_id: str, addresses: set[str]) -> set[str]:
    if not addresses:
        return set()
    rows = await db.scalars(
        select(Suppression.address).where(
            Suppression.org_id == org_id, Suppression.address.in_({a.lower() for a in addresses})
        )
    )
    return set(rows)


async def resend_blockers(
    db: AsyncSession, who: Principal, deliveries: list[Delivery]
) -> dict[str, str]:
    """Why a failure may not be resent now, by delivery id (absent: it may be). Resending
    would only fail the same way while the address is suppressed or its domain is on the
    organisation's blocked list; the pipeline's own checks decide what counts."""
    suppressed = await suppressed_addresses(db, who.org_id, {d.recipient for d in deliveries})
    org = await db.get(Organisation, who.org_id)
    blocked = list(org.blocked_domains or []) if org else []
    out: dict[str, str] = {}
    for d in deliveries:
        if d.state not in FAILED_STATES:
            out[d.id] = "only bounced or failed mail can be resent from here"
        elif d.recipient.lower() in suppressed:
            out[d.id] = (
                "this address is suppressed after a hard bounce; an administrator can lift "
                "the suppression first"
            )
        elif check_blocked_domain(d, blocked) is not None:
            out[d.id] = "its domain is on your organisation's blocked list"
    return out


async def lift_suppression(db: AsyncSession, org_id: str, address: str) -> bool:
    """Remove the organisation's suppression of `address`; False when there was none."""
    result = await db.execute(
        delete(Suppression).where(
            Suppression.org_id == org_id, Suppression.address == address.lower()
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
