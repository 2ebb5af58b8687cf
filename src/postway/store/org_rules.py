"""An organisation's sending rules as its administrators edit them on the web: throttling,
blocked domains and suppressions (the pipeline applies them; see delivery/pipeline.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import domain_of, normalize_address
from postway.domain.throttle import parse_limits
from postway.errors import InvalidInput, NotFound
from postway.store.models import Organisation, Suppression

MAX_BLOCKED = 1000


async def organisation(db: AsyncSession, org_id: str) -> Organisation:
    org = await db.get(Organisation, org_id)
    if org is None:
        raise NotFound("organisation not found")
    return org


def clean_domains(typed: list[str]) -> list[str]:
    """Domain names as typed (`@rival.example`, `Rival.Example`), checked and normalised,
    sorted without duplicates; InvalidInput names the first bad one."""
    if len(typed) > MAX_BLOCKED:
        raise InvalidInput(f"domains: at most {MAX_BLOCKED} domains", field="domains")
    cleaned = set()
    for i, d in enumerate(typed):
        try:
            # the same syntax check as a recipient's domain, then the DNS (IDNA) form
            cleaned.add(domain_of(normalize_address("x@" + d.strip().lstrip("@"))))
        except InvalidInput as exc:
            raise InvalidInput(f"domains[{i}]: '{d}' is not a domain name", "domains") from exc
    return sorted(cleaned)


async def set_blocked_domains(db: AsyncSession, org_id: str, typed: list[str]) -> list[str]:
    org = await organisation(db, org_id)
    org.blocked_domains = clean_domains(typed)
    return list(org.blocked_domains)


async def set_throttle(db: AsyncSession, org_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Replace the organisation's limits (checked by `domain.throttle.parse_limits`)."""
    try:
        parse_limits(data)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=str(exc).split(":", 1)[0]) from exc
    org = await organisation(db, org_id)
    org.throttle = data
    return data


async def suppressions(
    db: AsyncSession, org_id: str, search: str, limit: int, offset: int
) -> tuple[list[Suppression], int]:
    """The organisation's suppressed addresses containing `search` (any case), newest first,
    and how many match in all."""
    where = [Suppression.org_id == org_id]
    if search.strip():
        needle = search.strip().lower().replace("\\", "\\\\").replace("%", "\\%")
        needle = needle.replace("_", "\\_")
        where.append(Suppression.address.like(f"%{needle}%", escape="\\"))
    total = await db.scalar(select(func.count()).select_from(Suppression).where(*where)) or 0
    rows = await db.scalars(
        select(Suppression)
        .where(*where)
        .order_by(Suppression.created_at.desc(), Suppression.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total


async def lift_suppression(db: AsyncSession, org_id: str, address: str) -> None:
    row = await db.scalar(
        select(Suppression).where(
            Suppression.org_id == org_id, Suppression.address == address.strip().lower()
        )
    )
    if row is None:
        raise NotFound(f"{address} is not suppressed")
    await db.delete(row)
