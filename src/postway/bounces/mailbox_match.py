"""Bounce reports found in a user's own mailbox: which of that user's deliveries they are
about, and the `bounced` state they earn. Provider-neutral: the IMAP scan (`imap_scan`) hands
reports in, and a Gmail mailbox scan can hand in its own the same way.

Without VERP there is no signed token to name the delivery, so a report is matched by what it
quotes: the original Message-ID (in the returned message or headers part, or the report's
In-Reply-To / References) and the failed recipient. The trust this rests on, kept here:

1. Scope: only deliveries of the mailbox's owner (user and organisation), sent through the
   channels the mailbox serves, are ever looked at; a report in user A's mailbox can never
   change user B's delivery, whatever Message-ID it quotes.
2. The mailbox is the user's own, and Postway's Message-IDs are random: a stranger cannot name
   a delivery. Someone who received the message knows its Message-ID and its visible
   recipients and could write a report; the harm is bounded to that message's deliveries.
3. Only a delivery the channel handed over (`sent`, `delivered`) becomes `bounced`; one
   already bounced stays as it is.
4. Idempotent: every message read is remembered (`MailboxReport`, unique per user, mailbox
   and message id) in the transaction that applies it, so a second scan, or two processes
   scanning at once, never apply a report twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postway.bounces.isolation import BounceParseFailed, parse_isolated
from postway.bounces.model import BounceReport, BounceResult
from postway.config import Settings
from postway.delivery.outcomes import add_suppression
from postway.delivery.transitions import Bounce, transition
from postway.domain.states import DeliveryState
from postway.store.db import Database
from postway.store.models import Delivery, MailboxReport, Message, utcnow

log = logging.getLogger("postway.bounces")

PROCESSED, IGNORED, UNMATCHED, FAILED = "processed", "ignored", "unmatched", "failed"
BOUNCEABLE = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)
SOURCE = "mailbox"

# Headers that carry the original message's id: its own Message-ID (in the returned message
# or text/rfc822-headers part), and a report's In-Reply-To / References. Matched at a line
# start only, then each value is read within a bounded window: linear in the input.
_ID_HEADER_RE = re.compile(
    rb"^(?:Message-ID|In-Reply-To|References|Original-Message-ID|X-Original-Message-ID)"
    rb"[ \t]*:", re.IGNORECASE | re.MULTILINE,
)  # fmt: skip
_ANGLE_ID_RE = re.compile(rb"<([^<>\s]{1,250})>")
_SCAN_BYTES = 2_000_000  # the returned headers sit near the top; a report is bounded anyway
_VALUE_BYTES = 4000  # one header value, folded lines included
_MAX_IDS = 50


@dataclass(frozen=True, slots=True)
class MailboxOwner:
    """Whose mailbox a report was found in, and which of their channels it serves."""

    org_id: str
    user_id: str
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Matched:
    """What one mailbox message did."""

    status: str  # processed, ignored, unmatched, failed; or "seen" when read before
    kind: str | None = None
    bounced: list[str] = field(default_factory=list)  # delivery ids now `bounced`
    note: str | None = None


def quoted_message_ids(raw: bytes) -> list[str]:
    """The Message-IDs a report quotes (without angle brackets), in order, at most 50."""
    found: dict[str, None] = {}
    head = raw[:_SCAN_BYTES]
    for m in _ID_HEADER_RE.finditer(head):
        value = _header_value(head, m.end())
        for angle in _ANGLE_ID_RE.finditer(value):
            found.setdefault(angle.group(1).decode("ascii", "replace"), None)
            if len(found) >= _MAX_IDS:
                return list(found)
    return list(found)


def _header_value(data: bytes, start: int) -> bytes:
    """The value from `start` to the end of the header (folded lines joined), bounded."""
    window = data[start : start + _VALUE_BYTES]
    end = 0
    while True:
        nl = window.find(b"\n", end)
        if nl < 0 or nl + 1 >= len(window) or window[nl + 1 : nl + 2] not in (b" ", b"\t"):
            return window if nl < 0 else window[:nl]
        end = nl + 1


async def seen_ids(db: Database, user_id: str, mailbox: str, source_ids: Iterable[str]) -> set[str]:
    """Which of these mailbox messages were read before (and so are not fetched again)."""
    wanted = list(dict.fromkeys(source_ids))
    seen: set[str] = set()
    async with db.reader() as s:
        for i in range(0, len(wanted), 500):
            rows = await s.scalars(
                select(MailboxReport.source_id).where(
                    MailboxReport.user_id == user_id,
                    MailboxReport.mailbox == mailbox,
                    MailboxReport.source_id.in_(wanted[i : i + 500]),
                )
            )
            seen.update(rows)
    return seen


async def apply_mailbox_report(
    db: Database,
    settings: Settings,
    owner: MailboxOwner,
    mailbox: str,
    source_id: str,
    raw: bytes,
) -> Matched:
    """Parse one message of `owner`'s mailbox (in the isolated parser, under its time limit)
    and mark the deliveries it reports as bounced; remember it either way. A message read
    before changes nothing ("seen")."""
    if source_id in await seen_ids(db, owner.user_id, mailbox, [source_id]):
        return Matched("seen")
    failure = ""
    try:
        report: BounceReport | None = await parse_isolated(
            raw, settings.bounce_parse_timeout_seconds
        )
    except BounceParseFailed as exc:
        log.warning("a message in a bounce mailbox could not be parsed: %s", exc)
        report, failure = None, str(exc)
    ids = quoted_message_ids(raw)
    if report is None:
        return await remember(db, owner, mailbox, source_id, Matched(FAILED, note=failure))
    return await _record(db, owner, mailbox, source_id, report, ids)


async def remember(
    db: Database, owner: MailboxOwner, mailbox: str, source_id: str, result: Matched
) -> Matched:
    """Record a mailbox message as read without applying anything (e.g. too large to read),
    so no later scan fetches it; "seen" when another scan recorded it first."""
    try:
        async with db.session() as s, s.begin():
            _add(s, owner, mailbox, source_id, result)
            await s.flush()
    except IntegrityError:
        return Matched("seen")
    return result


async def _record(
    db: Database,
    owner: MailboxOwner,
    mailbox: str,
    source_id: str,
    report: BounceReport,
    ids: list[str],
) -> Matched:
    try:
        async with db.session() as s, s.begin():
            result = await _apply(s, owner, report, ids)
            _add(s, owner, mailbox, source_id, result)
            await s.flush()  # the unique key: a concurrent scan that got here first wins
    except IntegrityError:
        return Matched("seen")  # rolled back: its bounces were applied by the other scan
    return result


def _add(s: AsyncSession, owner: MailboxOwner, mailbox: str, source_id: str, r: Matched) -> None:
    s.add(
        MailboxReport(
            org_id=owner.org_id,
            user_id=owner.user_id,
            mailbox=mailbox[:400],
            source_id=source_id[:200],
            status=r.status,
            kind=r.kind,
            delivery_ids=list(r.bounced),
            note=r.note,
        )
    )


async def _apply(
    s: AsyncSession, owner: MailboxOwner, report: BounceReport, ids: list[str]
) -> Matched:
    if report.kind != "bounce":
        # Delay notices, auto-replies, complaints and ordinary mail leave deliveries alone.
        return Matched(IGNORED, report.kind, note=f"not a bounce ({report.kind})")
    failures = [r for r in report.results if r.reason != "delivered"]
    deliveries = await _candidates(s, owner, ids)
    if not deliveries:
        return Matched(UNMATCHED, report.kind, note=_named(ids, failures))
    bounced: list[str] = []
    for r in failures:
        for d in _matching(deliveries, r):
            if d.state in BOUNCEABLE and d.id not in bounced:
                _bounce(s, d, r)
                if r.hard:
                    await add_suppression(s, d, (r.reason or "undefined")[:64])
                bounced.append(d.id)
    if bounced:
        return Matched(PROCESSED, report.kind, bounced)
    return Matched(UNMATCHED, report.kind, note=_named(ids, failures))


async def _candidates(s: AsyncSession, owner: MailboxOwner, ids: list[str]) -> list[Delivery]:
    """The owner's deliveries of the messages the report quotes (locked for the update)."""
    if not ids:
        return []
    forms = [*ids, *(f"<{i}>" for i in ids)]
    messages = select(Message.id).where(
        Message.org_id == owner.org_id,
        Message.user_id == owner.user_id,
        Message.message_id_header.in_(forms),
    )
    rows = await s.scalars(
        select(Delivery)
        .where(
            Delivery.message_id.in_(messages),
            Delivery.org_id == owner.org_id,
            Delivery.user_id == owner.user_id,
            Delivery.channel.in_(owner.channels),
        )
        .order_by(Delivery.created_at, Delivery.id)
        .with_for_update()
    )
    return list(rows)


def _matching(deliveries: list[Delivery], r: BounceResult) -> list[Delivery]:
    """The deliveries a report line is about: the same recipient (case aside). A line that
    names no recipient is about the message's only delivery, if it has one."""
    if r.recipient:
        want = r.recipient.strip().lower()
        return [d for d in deliveries if d.recipient.lower() == want]
    by_message: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_message.setdefault(d.message_id, []).append(d)
    return next(iter(by_message.values())) if len(by_message) == 1 and len(deliveries) == 1 else []


def _bounce(s: AsyncSession, d: Delivery, r: BounceResult) -> None:
    diagnostic = r.diagnostic or None
    code = re.match(r"\s*(?:smtp\s*;\s*)?([245]\d\d)\b", diagnostic or "", re.IGNORECASE)
    change = Bounce(
        reason=(r.reason or "undefined")[:64],
        status=(r.status or None) and r.status[:16],
        diagnostic=diagnostic,
        hard=r.hard,
        remote_mta=(r.remote_mta or None) and r.remote_mta[:255],
        reply_code=int(code.group(1)) if code else None,
        detail={"source": SOURCE},
    )
    transition(s, d, change, now=utcnow())  # final: off the queue


def _named(ids: list[str], failures: list[BounceResult]) -> str:
    rcpts = list(dict.fromkeys(r.recipient.lower() for r in failures if r.recipient))
    return (
        "names none of this user's deliveries: Message-ID "
        f"{', '.join(f'<{i}>' for i in ids[:3]) or 'none'}; recipient "
        f"{', '.join(rcpts[:3]) or 'none'}"
    )


async def count_reports(db: Database, user_id: str, mailbox: str) -> int:
    """How many messages of this mailbox have been read (for status and tests)."""
    async with db.reader() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(MailboxReport)
                .where(MailboxReport.user_id == user_id, MailboxReport.mailbox == mailbox)
            )
            or 0
        )


# Deliveries a bounce could still arrive for: handed over, not yet bounced.
AWAITING = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)


async def oldest_awaiting_send(
    db: Database, owner: MailboxOwner, window_days: float
) -> datetime | None:
    """When the oldest delivery still awaiting a possible bounce was handed over: sent
    through the owner's channels within the window, not yet bounced. None: nothing awaits."""
    since = utcnow() - timedelta(days=window_days)
    async with db.reader() as s:
        return await s.scalar(
            select(func.min(Delivery.updated_at)).where(
                Delivery.org_id == owner.org_id,
                Delivery.user_id == owner.user_id,
                Delivery.channel.in_(owner.channels),
                Delivery.state.in_(AWAITING),
                Delivery.updated_at >= since,
            )
        )
