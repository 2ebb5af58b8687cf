"""What a stored bounce does to the deliveries: parse it, find the delivery its VERP token names,
and record the outcome (state, event, suppression) in one transaction with the bounce's status.

Statuses of a `BounceMessage` (the lifecycle kept by this module):

    received   stored by the intake, not yet processed (a crash here is recovered by
               `process_pending` at the next start)
    processed  it changed a delivery: bounced, delayed or complaint
    ignored    not a failure (auto-reply, delivery report) or a duplicate of an earlier bounce
    unmatched  no delivery found for it; kept for review, changed nothing
    failed     not understood (or processing broke); kept for review with the error

Invariant: a bounce row leaves `received` in the same transaction that writes its effects, so
processing one twice (a retry, two intake processes after a crash) never doubles its events.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from postway.bounces.model import BounceReport, BounceResult
from postway.bounces.parse import parse_bounce
from postway.config import Settings
from postway.delivery.outcomes import add_suppression
from postway.domain.states import DeliveryState
from postway.mta.verp import parse_return_path
from postway.store.db import Database
from postway.store.events import append_event
from postway.store.models import BounceMessage, Delivery, DeliveryEvent, Message, utcnow

log = logging.getLogger("postway.bounces")

RECEIVED, PROCESSED, IGNORED, UNMATCHED, FAILED = (
    "received", "processed", "ignored", "unmatched", "failed",
)  # fmt: skip
REVIEW = (FAILED, UNMATCHED)
COMPLAINT_REASON = "complaint"
_TOKEN_RE = re.compile(rb"b\+[0-9a-f]{32}-[a-z2-7]{16}@[a-z0-9.-]+", re.IGNORECASE)
_REPLY_CODE_RE = re.compile(r"^\s*(?:smtp\s*;\s*)?([245]\d\d)\b", re.IGNORECASE)
_SCAN_BYTES = 1_000_000  # a token in a returned message sits in its headers, near the top


@dataclass(frozen=True)
class Processed:
    """What processing made of one stored bounce."""

    bounce_id: str
    status: str
    kind: str | None = None
    delivery_id: str | None = None
    error: str | None = None


async def store_bounce(
    db: Database, *, mail_from: str, rcpt_tos: list[str], peer: str, raw: bytes
) -> list[str]:
    """Store one accepted message raw, a row per recipient; returns the ids once committed.

    The intake answers 250 only after this returns: from then on the bounce is ours to keep.
    """
    now = utcnow()
    rows = [
        BounceMessage(
            received_at=now,
            mail_from=mail_from[:320],
            rcpt_to=rcpt[:320],
            peer=peer[:64],
            raw=raw,
            size=len(raw),
            status=RECEIVED,
        )  # fmt: skip
        for rcpt in rcpt_tos
    ]
    async with db.session() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        return [r.id for r in rows]


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
            row = await s.get(BounceMessage, bounce_id, options=[defer(BounceMessage.raw)])
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
            .options(defer(BounceMessage.raw))
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
    async with db.session() as s, s.begin():
        # FOR UPDATE on PostgreSQL; on SQLite BEGIN IMMEDIATE already serialises writers.
        row = await s.scalar(
            select(BounceMessage).where(BounceMessage.id == bounce_id).with_for_update()
        )
        if row is None:
            return None
        if row.status != RECEIVED and not (retry and row.status in REVIEW):
            return _summary(row)
        report = parse_bounce(row.raw)
        row.kind = report.kind
        if report.kind == "none":
            _finish(row, FAILED, error="not recognised as a bounce, delay notice, auto-reply "
                                       "or complaint; kept for review")  # fmt: skip
            return _summary(row)
        delivery = await _find_delivery(s, settings, row, report)
        if delivery is not None:
            row.delivery_id, row.org_id = delivery.id, delivery.org_id
        if report.kind in ("auto-reply", "delivered"):
            _finish(row, IGNORED)  # the mailbox exists: nothing about the delivery changes
            return _summary(row)
        if delivery is None:
            _finish(row, UNMATCHED, error=_unmatched_reason(settings, row))
            return _summary(row)
        result = _result_for(report, delivery.recipient)
        await _apply(s, row, report, result, delivery)
        return _summary(row)


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
    was = d.state
    d.state = DeliveryState.BOUNCED.value
    d.reason, d.status, d.diagnostic, d.hard = reason, status, diagnostic, r.hard
    d.remote_mta = (r.remote_mta or None) and r.remote_mta[:255]
    d.reply_code = _reply_code(diagnostic)
    # Final state: off the queue, and any worker still holding a lease is fenced out.
    d.due_at, d.lease_owner, d.updated_at = None, None, utcnow()
    append_event(
        s, d, "bounced", source="dsn", bounce_message_id=row.id, previous_state=was,
        reason=reason, status=status, diagnostic=diagnostic, remote_mta=d.remote_mta,
        hard=r.hard,
    )  # fmt: skip
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
    append_event(s, d, "complaint", source="feedback-loop", bounce_message_id=row.id)
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
    s: AsyncSession, settings: Settings, row: BounceMessage, report: BounceReport
) -> Delivery | None:
    """The delivery a bounce is about: the VERP token it was sent to; for mail to the
    feedback address (which names no delivery), a signed token or the original Message-ID
    found in the returned message."""
    secret, domain = _secret_and_domain(settings)
    delivery_id = parse_return_path(row.rcpt_to, secret, domain)
    if delivery_id is None:
        delivery_id = _token_in(row.raw, secret, domain)
    if delivery_id is not None:
        return await s.get(Delivery, delivery_id, with_for_update=True)
    return await _by_message_id(s, row.raw, report)


def _token_in(raw: bytes, secret: str, domain: str) -> str | None:
    for m in _TOKEN_RE.finditer(raw[:_SCAN_BYTES]):
        found = parse_return_path(m.group().decode("ascii"), secret, domain)
        if found is not None:
            return found
    return None


async def _by_message_id(s: AsyncSession, raw: bytes, report: BounceReport) -> Delivery | None:
    from postway.bounces.dsn import returned_headers
    from postway.bounces.mime import header, parse_message

    try:
        original = returned_headers(parse_message(raw[:_SCAN_BYTES]))
        message_id = header(original, "Message-ID").strip() if original is not None else ""
    except Exception:  # noqa: BLE001 - a malformed report simply names no message
        return None
    if not message_id:
        return None
    recipients = {r.recipient.lower() for r in report.results if r.recipient}
    rows = await s.scalars(
        select(Delivery)
        .join(Message, Message.id == Delivery.message_id)
        .where(Message.message_id_header == message_id)
        .with_for_update(of=Delivery)
    )
    candidates = list(rows)
    for d in candidates:
        if d.recipient.lower() in recipients:
            return d
    # One recipient: the report is about it even if it names no address (redacted ARF).
    return candidates[0] if len(candidates) == 1 else None


def _unmatched_reason(settings: Settings, row: BounceMessage) -> str:
    secret, domain = _secret_and_domain(settings)
    token = parse_return_path(row.rcpt_to, secret, domain)
    if token is not None:
        return f"no delivery {token} (the VERP token is valid, the delivery is gone)"
    return "no signed VERP token or known Message-ID identifies the delivery"
