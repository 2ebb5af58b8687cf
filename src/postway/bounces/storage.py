"""Where the bounce intake keeps what it receives, and for how long.

- A message is stored once, keyed by its SHA-256 (`bounce_bodies`), however many VERP addresses
  it was sent to; each address gets a small `bounce_messages` row that records what it did.
- Each client (an IPv4 address, or an IPv6 /64) has daily quotas: reports stored and bytes of
  new raw messages; over them the intake answers 452 and the sender retries later.
- Raw messages are deleted when the retention period ends; the rows (status, delivery, error
  and the hash of what was received) stay. Unprocessed rows keep their message.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.store.db import Database
from postway.store.models import BounceBody, BounceMessage, utcnow

RECEIVED = "received"  # the one status whose message must never be deleted
QUOTA_WINDOW = timedelta(days=1)


def peer_key(host: str) -> str:
    """The client that limits count by: an IPv4 address, or the /64 of an IPv6 address (one
    subscriber is commonly given a whole /64, so counting single addresses would not hold)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def sha256_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


async def store_bounce(
    db: Database,
    *,
    mail_from: str,
    rcpt_tos: list[str],
    peer: str,
    raw: bytes,
    now: datetime | None = None,
) -> list[str]:
    """Store one accepted message: its raw bytes once, a row per recipient; returns the row
    ids once committed. The intake answers 250 only after this returns."""
    now = now or utcnow()
    key = peer_key(peer)
    digest = sha256_of(raw)
    rows = [
        BounceMessage(
            received_at=now, mail_from=mail_from[:320], rcpt_to=rcpt[:320], peer=peer[:64],
            peer_key=key, raw_sha256=digest, size=len(raw), status=RECEIVED,
        )  # fmt: skip
        for rcpt in rcpt_tos
    ]
    async with db.session() as s, s.begin():
        await _insert_body(s, digest, raw, key, now)
        s.add_all(rows)
        await s.flush()
        return [r.id for r in rows]


async def _insert_body(s: AsyncSession, digest: str, raw: bytes, key: str, now: datetime) -> None:
    """Insert the message unless the same bytes are stored already (a resend, or two sessions
    at once: ON CONFLICT makes the race harmless on both databases)."""
    values = {"sha256": digest, "raw": raw, "size": len(raw), "peer_key": key, "received_at": now}
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    await s.execute(insert(BounceBody).values(**values).on_conflict_do_nothing())


@dataclass(frozen=True)
class PeerUsage:
    """What one client stored in the last `QUOTA_WINDOW`."""

    reports: int
    bytes: int


async def peer_usage(db: Database, host: str, *, now: datetime | None = None) -> PeerUsage:
    key = peer_key(host)
    since = (now or utcnow()) - QUOTA_WINDOW
    async with db.reader() as s, s.begin():
        reports = await s.scalar(
            select(func.count())
            .select_from(BounceMessage)
            .where(BounceMessage.peer_key == key, BounceMessage.received_at > since)
        )
        stored = await s.scalar(
            select(func.coalesce(func.sum(BounceBody.size), 0)).where(
                BounceBody.peer_key == key, BounceBody.received_at > since
            )
        )
    return PeerUsage(int(reports or 0), int(stored or 0))


async def quota_refusal(
    db: Database, settings: Settings, host: str, *, reports: int, size: int
) -> str | None:
    """None when `host` may store `reports` more rows and `size` more bytes today, else the
    SMTP reply (452: a temporary refusal, so a genuine MTA keeps the bounce and retries)."""
    used = await peer_usage(db, host)
    if used.reports + reports > settings.bounce_peer_daily_reports:
        return "452 4.3.1 Daily limit of bounce reports from your address reached; try later"
    if used.bytes + size > settings.bounce_peer_daily_bytes:
        return "452 4.3.1 Daily limit of bounce bytes from your address reached; try later"
    return None


@dataclass(frozen=True)
class Pruned:
    bodies: int
    bytes: int


async def prune_bounce_bodies(
    db: Database, *, retention_days: float, now: datetime | None = None
) -> Pruned:
    """Delete raw messages whose every row was received before the retention period began.

    Invariant: a message some row still waits to process (`received`) is never deleted, and
    no `bounce_messages` row is deleted: what a bounce did stays recorded.
    """
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    still_needed = exists().where(
        BounceMessage.raw_sha256 == BounceBody.sha256,
        (BounceMessage.received_at >= cutoff) | (BounceMessage.status == RECEIVED),
    )
    old = and_(BounceBody.received_at < cutoff, ~still_needed)
    async with db.session() as s, s.begin():
        count, size = (
            await s.execute(
                select(func.count(), func.coalesce(func.sum(BounceBody.size), 0)).where(old)
            )
        ).one()
        if count:
            await s.execute(
                delete(BounceBody).where(old).execution_options(synchronize_session=False)
            )
    return Pruned(int(count), int(size))
