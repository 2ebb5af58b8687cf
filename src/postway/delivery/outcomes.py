"""Recording what happened: state changes, retry scheduling, events, suppressions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import Outcome
from postway.delivery import queue
from postway.delivery.retry import RetryPolicy, next_attempt
from postway.domain.states import REASON_EXPIRED, REASON_THROTTLED, DeliveryState
from postway.metrics import Metrics
from postway.store.db import Database
from postway.store.events import append_event
from postway.store.models import ChannelSetting, Delivery, DeliveryEvent, Suppression, utcnow

log = logging.getLogger("postway.delivery")

UNKNOWN = "unknown"


def _apply_fields(d: Delivery, o: Outcome, now: datetime) -> None:
    d.reason = o.reason
    d.status = o.status
    d.reply_code = o.reply_code
    d.diagnostic = o.diagnostic
    d.remote_mta = o.remote_mta
    d.hard = o.hard
    d.updated_at = now


def _event_detail(d: Delivery, o: Outcome) -> dict[str, object]:
    return {
        "attempt": d.attempts,
        "reason": o.reason,
        "status": o.status,
        "reply_code": o.reply_code,
        "diagnostic": o.diagnostic,
        "remote_mta": o.remote_mta,
        **o.detail,
    }


@dataclass(frozen=True, slots=True)
class Recorded:
    """An outcome with the context its recording needs."""

    outcome: Outcome
    setting_id: str | None = None  # the channel settings row to flag on `needs_attention`


async def record_outcomes(
    db: Database,
    worker_id: str,
    items: Sequence[Outcome | Recorded],
    policy: RetryPolicy,
    *,
    metrics: Metrics | None = None,
) -> None:
    """Write outcomes for deliveries this worker still holds, in one transaction; others were
    taken over after our lease expired and their new holder's result wins (ours is dropped)."""
    if not items:
        return
    recorded = [i if isinstance(i, Recorded) else Recorded(i) for i in items]
    now = utcnow()
    async with db.session() as s, s.begin():
        rows = await queue.held(
            s, worker_id, [r.outcome.delivery_id for r in recorded], postgres=not db.is_sqlite
        )
        by_id = {d.id: d for d in rows}
        attention: dict[str, str] = {}
        for r in recorded:
            o = r.outcome
            d = by_id.get(o.delivery_id)
            if d is None:
                log.warning("lease lost for delivery %s; result dropped", o.delivery_id)
                continue
            if o.needs_attention and r.setting_id:
                attention.setdefault(r.setting_id, o.needs_attention)
            if o.state is DeliveryState.DEFERRED:
                await _defer(s, d, o, policy, now)
            else:
                _finish(s, d, o, now)
                if o.state is DeliveryState.BOUNCED and o.hard:
                    await add_suppression(s, d, o.reason or "hard bounce")
            log.info(
                "delivery %s %s",
                d.id,
                d.state,
                extra={
                    "delivery_id": d.id,
                    "message_id": d.message_id,
                    "state": d.state,
                    "reason": d.reason,
                    "status": d.status,
                    "remote_mta": d.remote_mta,
                    "attempt": d.attempts,
                },
            )
            if metrics is not None:
                metrics.outcomes.labels(d.channel, d.state, d.reason or "").inc()
        for setting_id, text in attention.items():
            setting = await s.get(ChannelSetting, setting_id)
            if setting is not None:
                setting.attention = text


class OutcomeRecorder:
    """Group commit: outcomes from many concurrent messages are written together, one
    transaction per flush, instead of one transaction per message."""

    def __init__(
        self, db: Database, worker_id: str, policy: RetryPolicy, metrics: Metrics | None
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.policy = policy
        self.metrics = metrics
        self._pending: list[Recorded] = []
        self._ready = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._run())

    async def add(self, outcomes: list[Outcome], setting_id: str | None) -> None:
        self._pending.extend(Recorded(o, setting_id) for o in outcomes)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await record_outcomes(
                        self.db, self.worker_id, batch, self.policy, metrics=self.metrics
                    )
                except Exception:
                    # unrecorded deliveries stay leased and are retried after the lease
                    log.exception("recording %d outcomes failed", len(batch))
            if self._closed and not self._pending:
                return

    async def close(self) -> None:
        """Flush everything added so far and stop."""
        self._closed = True
        self._ready.set()
        await self._task


def _finish(s: AsyncSession, d: Delivery, o: Outcome, now: datetime) -> None:
    d.state = o.state.value
    _apply_fields(d, o, now)
    d.due_at = None
    d.lease_owner = None
    append_event(s, d, o.state.value, **_event_detail(d, o))


async def _defer(
    s: AsyncSession, d: Delivery, o: Outcome, policy: RetryPolicy, now: datetime
) -> None:
    if o.reason == REASON_THROTTLED:
        # Not an attempt and not subject to the queue lifetime: the mail waits for its window.
        d.attempts = max(d.attempts - 1, 0)
        d.due_at = now + timedelta(seconds=o.retry_after or 0.0)
        d.lease_owner = None
        d.updated_at = now
        append_event(s, d, "throttled", next_attempt_at=d.due_at.isoformat(), note=o.diagnostic)
        return
    unknown = o.detail.get("outcome") == UNKNOWN
    if unknown and await _had_unknown(s, d.id):
        # Retried once already: a second blind resend risks a third copy; stop here.
        o.reason = o.reason or "networkerror"
        o.diagnostic = (
            f"{o.diagnostic or ''} (outcome unknown twice after the final dot; "
            "not retried again, the recipient may have received it)"
        ).strip()
        o.state = DeliveryState.FAILED
        _finish(s, d, o, now)
        return
    when = next_attempt(policy, d.attempts, now, d.expires_at, o.retry_after)
    if when is None:
        last = o.diagnostic or o.reason or "temporary failure"
        o.state = DeliveryState.FAILED
        o.reason = REASON_EXPIRED
        o.diagnostic = f"gave up after {d.attempts} attempts; last error: {last}"
        _finish(s, d, o, now)
        return
    d.state = DeliveryState.DEFERRED.value
    _apply_fields(d, o, now)
    d.due_at = when
    d.lease_owner = None
    detail = _event_detail(d, o)
    detail["next_attempt_at"] = when.isoformat()
    if unknown:
        detail["note"] = (
            "the connection failed after the message was sent: it may have arrived; "
            "it is sent once more, since a duplicate is the lesser harm than a loss"
        )
    append_event(s, d, "unknown-outcome" if unknown else "deferred", **detail)


async def _had_unknown(s: AsyncSession, delivery_id: str) -> bool:
    found = await s.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.delivery_id == delivery_id, DeliveryEvent.type == "unknown-outcome"
        )
    )
    return found is not None


async def add_suppression(s: AsyncSession, d: Delivery, reason: str) -> None:
    address = d.recipient.lower()
    exists = await s.scalar(
        select(Suppression.id).where(Suppression.org_id == d.org_id, Suppression.address == address)
    )
    if exists is None:
        s.add(Suppression(org_id=d.org_id, address=address, reason=reason, source_delivery_id=d.id))
