"""What a stored bounce does to the deliveries: parse it, find the delivery its VERP token names,
and record the outcome (state, event, suppression) in one transaction with the bounce's status.

Statuses of a `BounceMessage` (the lifecycle kept by this module):

    received   stored by the intake, not yet processed (a crash here is recovered by
               `process_pending` at the next start)
    processed  it changed a delivery: bounced, delayed or complaint
    ignored    not a failure (auto-reply, delivery report) or a duplicate of an earlier bounce
    unmatched  no signed VERP token names a delivery (or the one named is gone); kept for
               review with what the report names (Message-ID, recipients), changed nothing
    failed     not understood (or processing broke); kept for review with the error

Invariant: a bounce row leaves `received` in the same transaction that writes its effects, so
processing one twice (a retry, two intake processes after a crash) never doubles its events.

Invariant: only a signed VERP token changes a delivery (the address the report was sent to,
or for the feedback address a token in the returned message's headers). A report naming a
Message-ID and a recipient proves nothing: anyone can write one, so it is recorded only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from postway.bounces.isolation import BounceParseFailed, parse_isolated
from postway.bounces.model import BounceReport, BounceResult
from postway.bounces.storage import store_bounce as store_bounce  # re-exported for callers
from postway.config import Settings
from postway.delivery.outcomes import add_suppression
from postway.delivery.transitions import Bounce, Complaint, transition
from postway.domain.states import DeliveryState
from postway.mta.verp import parse_return_path
from postway.store.db import Database
from postway.store.events import append_event
from postway.store.models import BounceMessage, Delivery, DeliveryEvent, utcnow

log = logging.getLogger("postway.bounces")

RECEIVED, PROCESSED, IGNORED, UNMATCHED, FAILED = (
    "received", "processed", "ignored", "unmatched", "failed",
)  # fmt: skip
REVIEW = (FAILED, UNMATCHED)
COMPLAINT_REASON = "complaint"
_TOKEN_RE = re.compile(rb"b\+[0-9a-f]{32}-[a-z2-7]{16}@[a-z0-9.-]+", re.IGNORECASE)
_REPLY_CODE_RE = re.compile(r"^\s*(?:smtp\s*;\s*)?([245]\d\d)\b", re.IGNORECASE)
_SCAN_BYTES = 1_000_000  # a token in a returned message sits in its headers, near the top
# Linear: a literal at a line start, then one bounded class (no overlapping quantifiers).
_MESSAGE_ID_RE = re.compile(rb"^Message-ID:[ \t]*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
_NAMED = 3  # Message-IDs and recipients quoted in a review note


@dataclass(frozen=True)
class Processed:
    """What processing made of one stored bounce."""

    bounce_id: str
    status: str
    kind: str | None = None
    delivery_id: str | None = None
    error: str | None = None


async def process_bounce(
    db: Database, settings: Settings, bounce_id: str, *, retry: bool = False
) -> Processed | None:
    """Process one stored bounce (None if there is no such row). A row already past `received`
    is left alone unless `retry` asks to re-run one kept for review (failed or unmatched)."""
    try:
        return await _process(db, settings, bounce_id, retry)
    except Exception as exc:  # noqa: BLE001 - a bug must leave the bounce listed, not lost
        log.exception("processing bounce %s failed", bounce_id)
        error = f"processing error: {type(exc).__name__}: {exc}"
        async with db.session() as s, s.begin():
            row = await s.get(BounceMessage, bounce_id)
            if row is None:
                return None
            _finish(row, FAILED, error=error)
            return _summary(row)


async def process_pending(db: Database, settings: Settings) -> list[Processed]:
    """Process rows still `received` (the intake stopped between storing and processing)."""
    return await _process_all(db, settings, (RECEIVED,), retry=False)


async def reprocess_failed(db: Database, settings: Settings) -> list[Processed]:
    """Run the rows kept for review (failed, unmatched) through processing again, e.g. after
    a parser upgrade; rows that still fail stay listed."""
    return await _process_all(db, settings, REVIEW, retry=True)


async def list_failures(db: Database, limit: int = 50) -> list[BounceMessage]:
    """Bounces kept for review, newest first (without their raw bytes)."""
    async with db.session() as s, s.begin():
        rows = await s.scalars(
            select(BounceMessage)
            .where(BounceMessage.status.in_(REVIEW))
            .order_by(BounceMessage.received_at.desc(), BounceMessage.id)
            .limit(limit)
        )
        return list(rows)


async def _process_all(
    db: Database, settings: Settings, statuses: tuple[str, ...], *, retry: bool
) -> list[Processed]:
    async with db.session() as s, s.begin():
        ids = list(
            await s.scalars(
                select(BounceMessage.id)
                .where(BounceMessage.status.in_(statuses))
                .order_by(BounceMessage.received_at, BounceMessage.id)
            )
        )
    done = [await process_bounce(db, settings, i, retry=retry) for i in ids]
    return [p for p in done if p is not None]


# --- one bounce ---------------------------------------------------------------------------


async def _process(
    db: Database, settings: Settings, bounce_id: str, retry: bool
) -> Processed | None:
    parsed = await _parse_unlocked(db, settings, bounce_id, retry)
    async with db.session() as s, s.begin():
        # FOR UPDATE on PostgreSQL; on SQLite BEGIN IMMEDIATE already serialises writers.
        row = await s.scalar(
            select(BounceMessage)
            .options(selectinload(BounceMessage.body))
            .where(BounceMessage.id == bounce_id)
            .with_for_update(of=BounceMessage)
        )
        if row is None:
            return None
        if row.status != RECEIVED and not (retry and row.status in REVIEW):
            return _summary(row)
        if row.body is None and row.status != RECEIVED:
            return _summary(row)  # retention deleted the message; its record stands
        if isinstance(parsed, BounceParseFailed):
            # Poisoned: failed for review, so neither this run nor the next start (which takes
            # only `received` rows) parses it again; `bounce failures --retry` may, by hand.
            _finish(row, FAILED, error=f"{parsed}; kept for review, not retried automatically")
            return _summary(row)
        if parsed is None:
            return _summary(row)  # it was not ours to parse when read (another run took it)
        report = parsed
        row.kind = report.kind
        if report.kind == "none":
            _finish(row, FAILED, error="not recognised as a bounce, delay notice, auto-reply "
                                       "or complaint; kept for review")  # fmt: skip
            return _summary(row)
        delivery = await _find_delivery(s, settings, row)
        if delivery is not None:
            row.delivery_id, row.org_id = delivery.id, delivery.org_id
        if report.kind in ("auto-reply", "delivered"):
            _finish(row, IGNORED)  # the mailbox exists: nothing about the delivery changes
            return _summary(row)
        if delivery is None:
            _finish(row, UNMATCHED, error=_unmatched_reason(settings, row, report))
            return _summary(row)
        result = _result_for(report, delivery.recipient)
        await _apply(s, row, report, result, delivery)
        return _summary(row)


async def _parse_unlocked(
    db: Database, settings: Settings, bounce_id: str, retry: bool
) -> BounceReport | BounceParseFailed | None:
    """The stored message's report, parsed in a worker process under the time limit before
    any lock is taken (on SQLite a write transaction held through a slow parse would stall
    every other writer); None when the row is not one to process; the failure when the
    message is poisoned (the parse overran or killed its worker)."""
    async with db.reader() as s:
        row = await s.scalar(
            select(BounceMessage)
            .options(selectinload(BounceMessage.body))
            .where(BounceMessage.id == bounce_id)
        )
        if row is None or (row.status != RECEIVED and not (retry and row.status in REVIEW)):
            return None
        raw = row.raw
    try:
        return await parse_isolated(raw, settings.bounce_parse_timeout_seconds)
    except BounceParseFailed as exc:
        log.warning("bounce %s could not be parsed: %s", bounce_id, exc)
        return exc


async def _apply(
    s: AsyncSession, row: BounceMessage, report: BounceReport, r: BounceResult, d: Delivery
) -> None:
    if report.kind == "feedback":
        await _complaint(s, row, d)
    elif report.kind == "delay" or (r.action or "").lower().startswith("delayed"):
        # A warning: the remote MTA is still trying, so the delivery's state stands.
        append_event(
            s, d, "delayed", source="dsn", bounce_message_id=row.id, reason=r.reason,
            status=r.status, diagnostic=r.diagnostic or None, remote_mta=r.remote_mta,
        )  # fmt: skip
        _finish(row, PROCESSED)
    elif r.reason == "delivered":
        _finish(row, IGNORED)
    else:
        await _bounce(s, row, r, d)


async def _bounce(s: AsyncSession, row: BounceMessage, r: BounceResult, d: Delivery) -> None:
    reason = (r.reason or "undefined")[:64]
    status = (r.status or None) and r.status[:16]
    diagnostic = r.diagnostic or None
    previous = await _last_dsn_bounce(s, d.id)
    if d.state == DeliveryState.BOUNCED and previous is not None and (
        previous.detail.get("reason"), previous.detail.get("status"),
        previous.detail.get("diagnostic"),
    ) == (reason, status, diagnostic):  # fmt: skip
        # The same report again (a sender retrying after a lost 250): one event is enough.
        _finish(
            row, IGNORED, error=f"duplicate of bounce {previous.detail.get('bounce_message_id')}"
        )
        return
    bounce = Bounce(
        reason, status, diagnostic, r.hard, (r.remote_mta or None) and r.remote_mta[:255],
        _reply_code(diagnostic), {"source": "dsn", "bounce_message_id": row.id},
    )  # fmt: skip
    transition(s, d, bounce, now=utcnow())  # final: off the queue, any lease holder fenced out
    if r.hard:
        await add_suppression(s, d, reason)
    _finish(row, PROCESSED)


async def _complaint(s: AsyncSession, row: BounceMessage, d: Delivery) -> None:
    seen = await s.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.delivery_id == d.id, DeliveryEvent.type == "complaint"
        )
    )
    if seen is not None:
        _finish(row, IGNORED, error="duplicate complaint: already recorded for this delivery")
        return
    complaint = Complaint({"source": "feedback-loop", "bounce_message_id": row.id})
    transition(s, d, complaint, now=utcnow())
    await add_suppression(s, d, COMPLAINT_REASON)
    _finish(row, PROCESSED)


async def _last_dsn_bounce(s: AsyncSession, delivery_id: str) -> DeliveryEvent | None:
    events = await s.scalars(
        select(DeliveryEvent)
        .where(DeliveryEvent.delivery_id == delivery_id, DeliveryEvent.type == "bounced")
        .order_by(DeliveryEvent.id.desc())
        .limit(1)
    )
    last = events.first()
    return last if last is not None and last.detail.get("source") == "dsn" else None


def _result_for(report: BounceReport, recipient: str) -> BounceResult:
    """The report's line about this delivery's recipient; with VERP a bounce concerns one
    recipient, so if none matches (a forwarded address) the first failure is about ours."""
    for r in report.results:
        if r.recipient and r.recipient.lower() == recipient.lower():
            return r
    failing = [r for r in report.results if r.reason != "delivered"]
    if failing or report.results:
        return (failing or report.results)[0]
    return BounceResult(recipient=None, status=None, reason="undefined", hard=False)


def _reply_code(diagnostic: str | None) -> int | None:
    m = _REPLY_CODE_RE.match(diagnostic or "")
    return int(m.group(1)) if m else None


def _finish(row: BounceMessage, status: str, *, error: str | None = None) -> None:
    row.status = status
    row.error = error
    row.processed_at = utcnow()


def _summary(row: BounceMessage) -> Processed:
    return Processed(row.id, row.status, row.kind, row.delivery_id, row.error)


# --- which delivery ----------------------------------------------------------------------


def _secret_and_domain(settings: Settings) -> tuple[str, str]:
    return settings.resolved_secret_key(), settings.bounce_domain


async def _find_delivery(
    s: AsyncSession, settings: Settings, row: BounceMessage
) -> Delivery | None:
    """The delivery a bounce is about, named by a signed VERP token only: the address it was
    sent to or, for mail to the feedback address (a complaint loop returns the original
    headers, Return-Path included), a token in the returned message. Nothing else a report
    says (Message-ID, recipient) chooses a delivery: anyone can write those."""
    secret, domain = _secret_and_domain(settings)
    delivery_id = parse_return_path(row.rcpt_to, secret, domain)
    if delivery_id is None:
        delivery_id = _token_in(row.raw, secret, domain)
    if delivery_id is None:
        return None
    return await s.get(Delivery, delivery_id, with_for_update=True)


def _token_in(raw: bytes, secret: str, domain: str) -> str | None:
    for m in _TOKEN_RE.finditer(raw[:_SCAN_BYTES]):
        found = parse_return_path(m.group().decode("ascii"), secret, domain)
        if found is not None:
            return found
    return None


def _unmatched_reason(settings: Settings, row: BounceMessage, report: BounceReport) -> str:
    secret, domain = _secret_and_domain(settings)
    token = parse_return_path(row.rcpt_to, secret, domain)
    if token is not None:
        return f"no delivery {token} (the VERP token is valid, the delivery is gone)"
    return (
        "no signed VERP token: kept for review, changed nothing (a report naming a message "
        f"is not proof it was sent one); it names {_named(row.raw, report)}"
    )


def _named(raw: bytes, report: BounceReport) -> str:
    """What an unsigned report claims to be about, for whoever reviews it (bounded)."""
    ids = list(dict.fromkeys(m.group(1).decode("ascii", "replace")
                             for m in _MESSAGE_ID_RE.finditer(raw[:_SCAN_BYTES])))  # fmt: skip
    rcpts = list(dict.fromkeys(r.recipient.lower() for r in report.results if r.recipient))
    return (
        f"Message-ID {', '.join(ids[:_NAMED]) or 'none'}; "
        f"recipient {', '.join(rcpts[:_NAMED]) or 'none'}"
    )
