"""Recording what happened: the retry decision, then the state changes (through
`transitions.transition_many`, which writes them and their events in a few Core statements
for the whole group), suppressions and channel attention.

An outcome in state DEFERRED is an attempt that failed for now, except two waits that are no
attempt at all: reason `throttled` (the mailbox's allowance; `retry_after` is the window) and
reason `channel-paused` / `channel-disconnected` (the account cannot send: parked until
`retry_after` seconds from now or, without one, until released; see `transitions.Park`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import Outcome
from postway.delivery import queue
from postway.delivery.retry import RetryPolicy, next_attempt
from postway.delivery.transitions import (
    PARK_REASONS,
    Change,
    Defer,
    Finish,
    Park,
    ThrottleWait,
    transition_many,
)
from postway.domain.states import REASON_EXPIRED, REASON_THROTTLED, DeliveryState
from postway.metrics import Metrics
from postway.store.db import Database
from postway.store.models import ChannelSetting, Delivery, DeliveryEvent, Suppression, utcnow
from postway.store.outage import OutageBackoff, is_outage

log = logging.getLogger("postway.delivery")

UNKNOWN = "unknown"


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
    release: Sequence[str] = (),
) -> None:
    """Write outcomes for deliveries this worker still holds, in one transaction; others were
    taken over after our lease expired and their new holder's result wins (ours is dropped).
    `release`: deliveries claimed but not attempted, given back in the same transaction."""
    if not items and not release:
        return
    recorded = [i if isinstance(i, Recorded) else Recorded(i) for i in items]
    now = utcnow()
    async with db.session() as s, s.begin():
        if release:
            await queue.release(s, worker_id, list(release), now)
        if not recorded:
            return
        rows = await queue.held(
            s, worker_id, [r.outcome.delivery_id for r in recorded], postgres=not db.is_sqlite
        )
        by_id = {d.id: d for d in rows}
        attention: dict[str, str] = {}
        changes: list[tuple[queue.Held, Change]] = []
        hard: dict[str, str] = {}  # delivery id -> suppression reason
        for r in recorded:
            o = r.outcome
            d = by_id.get(o.delivery_id)
            if d is None:
                log.warning("lease lost for delivery %s; result dropped", o.delivery_id)
                continue
            if o.needs_attention and r.setting_id:
                attention.setdefault(r.setting_id, o.needs_attention)
            change = await change_for(s, d, o, policy, now)
            changes.append((d, change))
            if isinstance(change, Finish) and o.state is DeliveryState.BOUNCED and o.hard:
                hard[d.id] = o.reason or "hard bounce"
        for d in await transition_many(s, changes, now=now, holder=worker_id):
            if d.id in hard:
                await add_suppression(s, d, hard[d.id])
            if log.isEnabledFor(logging.INFO):
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


# A flush goes once this many outcomes wait, or when the first of them has waited LINGER
# seconds: a transaction costs ~1.8 ms of CPU on SQLite whatever it holds (each statement is
# a hop to aiosqlite's thread), so one per finished message was most of the recording cost.
# A result written a little later only keeps its lease a little longer.
FLUSH_AT = 64
LINGER = 0.02


class OutcomeRecorder:
    """Group commit: outcomes from many concurrent messages are written together, one
    transaction per flush, instead of one transaction per message."""

    def __init__(
        self,
        db: Database,
        worker_id: str,
        policy: RetryPolicy,
        metrics: Metrics | None,
        *,
        linger: float = LINGER,
        hold_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.hold_seconds = hold_seconds
        # results of mail already sent: written soon after the database returns
        self._outage = OutageBackoff(
            f"results of worker {worker_id} held until it returns", log, ceiling=5.0
        )
        self.worker_id = worker_id
        self.policy = policy
        self.metrics = metrics
        self.linger = linger
        self._pending: list[Recorded] = []
        self._releases: list[str] = []
        self._ready = asyncio.Event()
        self._full = asyncio.Event()  # FLUSH_AT reached, or closing: flush without waiting
        self._closed = False
        self._task = asyncio.create_task(self._run())

    def release(self, delivery_ids: list[str]) -> None:
        """Deliveries of this batch that were not attempted because the database went away:
        given back with the next write, so they go again as soon as it returns rather than
        when the lease runs out."""
        self._releases.extend(delivery_ids)
        self._ready.set()

    async def add(self, outcomes: list[Outcome], setting_id: str | None) -> None:
        self._pending.extend(Recorded(o, setting_id) for o in outcomes)
        self._ready.set()
        if len(self._pending) >= FLUSH_AT:
            self._full.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            if not self._closed and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.linger)
            self._ready.clear()
            self._full.clear()
            batch, self._pending = self._pending, []
            releases, self._releases = self._releases, []
            if batch or releases:
                try:
                    await record_outcomes(
                        self.db,
                        self.worker_id,
                        batch,
                        self.policy,
                        metrics=self.metrics,
                        release=releases,
                    )
                except Exception as exc:
                    if is_outage(exc) and self._keep_trying():
                        # The mail went out: dropping its result would send it again once
                        # the lease ends. Hold it and write it when the database is back
                        # (still fenced by lease owner, so a takeover meanwhile wins).
                        self._pending[:0] = batch
                        self._releases[:0] = releases
                        await asyncio.sleep(self._outage.failed(exc))
                        self._ready.set()
                        continue
                    # unrecorded deliveries stay leased and are retried after the lease
                    log.exception("recording %d outcomes failed", len(batch))
                else:
                    self._outage.succeeded()
            if self._closed and not self._pending and not self._releases:
                return

    def _keep_trying(self) -> bool:
        """Past the lease another worker may have taken the deliveries over and resent them;
        holding results longer than that buys nothing."""
        since = self._outage.since
        return since is None or time.monotonic() - since < self.hold_seconds

    async def close(self) -> None:
        """Flush everything added so far and stop."""
        self._closed = True
        self._ready.set()
        self._full.set()
        await self._task


async def change_for(
    s: AsyncSession, d: Delivery | queue.Held, o: Outcome, policy: RetryPolicy, now: datetime
) -> Change:
    """The state change an attempt's outcome makes: the retry policy decides here, the write
    happens in `transitions.transition`."""
    if o.state is not DeliveryState.DEFERRED:
        return Finish(o)
    if o.reason == REASON_THROTTLED:
        return ThrottleWait(now + timedelta(seconds=o.retry_after or 0.0), o.diagnostic)
    if o.reason in PARK_REASONS:
        until = now + timedelta(seconds=o.retry_after) if o.retry_after is not None else None
        return Park(o.reason, until, o.diagnostic)
    unknown = o.detail.get("outcome") == UNKNOWN
    if unknown and await _had_unknown(s, d.id):
        # Retried once already: a second blind resend risks a third copy; stop here.
        o.reason = o.reason or "networkerror"
        o.diagnostic = (
            f"{o.diagnostic or ''} (outcome unknown twice after the final dot; "
            "not retried again, the recipient may have received it)"
        ).strip()
        o.state = DeliveryState.FAILED
        return Finish(o)
    when = next_attempt(policy, d.attempts, now, d.expires_at, o.retry_after)
    if when is None:
        last = o.diagnostic or o.reason or "temporary failure"
        o.state = DeliveryState.FAILED
        o.reason = REASON_EXPIRED
        o.diagnostic = f"gave up after {d.attempts} attempts; last error: {last}"
        return Finish(o)
    return Defer(o, when, unknown=unknown)


async def _had_unknown(s: AsyncSession, delivery_id: str) -> bool:
    found = await s.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.delivery_id == delivery_id, DeliveryEvent.type == "unknown-outcome"
        )
    )
    return found is not None


async def add_suppression(s: AsyncSession, d: Delivery | queue.Held, reason: str) -> None:
    address = d.recipient.lower()
    exists = await s.scalar(
        select(Suppression.id).where(Suppression.org_id == d.org_id, Suppression.address == address)
    )
    if exists is None:
        s.add(Suppression(org_id=d.org_id, address=address, reason=reason, source_delivery_id=d.id))
