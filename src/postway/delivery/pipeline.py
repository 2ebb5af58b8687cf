"""The delivery pipeline: claimed deliveries pass named steps, then the outcome is recorded.

    check suppression -> check blocked domain -> resolve route -> check throttle -> deliver
    -> record outcome

Each check is a small function that returns an `Outcome` when it decides a recipient's fate
without sending, or None to let it pass. Channels only deliver; everything else is here, once.
No database transaction is held while a channel talks to the network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import OutboundMessage, Outcome, Recipient
from postway.channels.registry import ChannelRegistry, Route
from postway.config import Settings
from postway.delivery.outcomes import OutcomeRecorder
from postway.delivery.retry import RetryPolicy
from postway.domain.states import (
    REASON_BLOCKED_DOMAIN,
    REASON_CHANNEL_ERROR,
    REASON_SUPPRESSED,
    REASON_THROTTLED,
    DeliveryState,
)
from postway.domain.throttle import Limits, parse_limits
from postway.errors import ChannelError
from postway.metrics import Metrics
from postway.store.db import Database
from postway.store.models import Delivery, Message, Organisation, Suppression, utcnow
from postway.store.throttle import reserve

log = logging.getLogger("postway.delivery")


def check_suppression(delivery: Delivery, suppressed: set[str]) -> Outcome | None:
    if delivery.recipient.lower() not in suppressed:
        return None
    return Outcome(
        delivery.id,
        delivery.recipient,
        DeliveryState.SUPPRESSED,
        reason=REASON_SUPPRESSED,
        diagnostic="a hard bounce for this address is on record; not sent",
    )


def check_blocked_domain(delivery: Delivery, blocked: Iterable[str]) -> Outcome | None:
    domain = delivery.recipient_domain
    for entry in blocked:
        entry = entry.lower().lstrip("@")
        if domain == entry or domain.endswith("." + entry):
            return Outcome(
                delivery.id,
                delivery.recipient,
                DeliveryState.FAILED,
                reason=REASON_BLOCKED_DOMAIN,
                diagnostic=f"{entry} is on your organisation's list of blocked domains",
            )
    return None


def throttled(deliveries: list[Delivery], retry_at: datetime, now: datetime) -> list[Outcome]:
    wait = max((retry_at - now).total_seconds(), 0.0)
    return [
        Outcome(
            d.id,
            d.recipient,
            DeliveryState.DEFERRED,
            reason=REASON_THROTTLED,
            retry_after=wait,
            diagnostic="sending limit reached for this mailbox; "
            f"next window at {retry_at:%H:%M:%S} UTC",
        )
        for d in deliveries
    ]


async def suppressed_among(db: AsyncSession, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (org_id, lower-cased address) pairs are suppressed, in one query."""
    if not pairs:
        return set()
    orgs = {o for o, _ in pairs}
    addresses = {a for _, a in pairs}
    rows = await db.execute(
        select(Suppression.org_id, Suppression.address).where(
            Suppression.org_id.in_(orgs), Suppression.address.in_(addresses)
        )
    )
    return {(o, a) for o, a in rows.all()} & pairs


@dataclass
class BatchContext:
    """What the checks need for one claimed batch, read in one transaction."""

    messages: dict[str, Message] = field(default_factory=dict)
    orgs: dict[str, Organisation] = field(default_factory=dict)
    suppressed: dict[str, set[str]] = field(default_factory=dict)  # org id -> addresses
    routes: dict[str, Route | ChannelError] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        registry: ChannelRegistry,
        worker_id: str,
        metrics: Metrics,
        *,
        concurrency: int = 100,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id
        self.policy = RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds)
        self._slots = asyncio.Semaphore(concurrency)

    async def process(self, claimed: list[Delivery]) -> None:
        """Run a claimed batch: one read for the whole batch, then each message through the
        steps concurrently, with outcomes written in group commits as they complete."""
        by_message: dict[str, list[Delivery]] = defaultdict(list)
        for d in claimed:
            by_message[d.message_id].append(d)
        ctx = await self._load(by_message)
        recorder = OutcomeRecorder(self.db, self.worker_id, self.policy, self.metrics)
        try:
            await asyncio.gather(
                *(self._guarded(ctx, mid, ds, recorder) for mid, ds in by_message.items())
            )
        finally:
            await recorder.close()

    async def _load(self, by_message: dict[str, list[Delivery]]) -> BatchContext:
        ctx = BatchContext()
        async with self.db.reader() as s, s.begin():
            rows = await s.scalars(select(Message).where(Message.id.in_(list(by_message))))
            ctx.messages = {m.id: m for m in rows}
            org_ids = {m.org_id for m in ctx.messages.values()}
            orgs = await s.scalars(select(Organisation).where(Organisation.id.in_(org_ids)))
            ctx.orgs = {o.id: o for o in orgs}
            pairs = {(d.org_id, d.recipient.lower()) for ds in by_message.values() for d in ds}
            for org_id, address in await suppressed_among(s, pairs):
                ctx.suppressed.setdefault(org_id, set()).add(address)
            for m in ctx.messages.values():
                try:
                    ctx.routes[m.id] = await self.registry.route(s, m)
                except ChannelError as exc:
                    ctx.routes[m.id] = exc
        return ctx

    async def _guarded(
        self,
        ctx: BatchContext,
        message_id: str,
        deliveries: list[Delivery],
        recorder: OutcomeRecorder,
    ) -> None:
        async with self._slots:
            try:
                await self._message(ctx, message_id, deliveries, recorder)
            except Exception:
                # The lease runs out and the deliveries are retried; nothing is lost.
                log.exception("pipeline failed for message %s", message_id)

    async def _message(
        self,
        ctx: BatchContext,
        message_id: str,
        deliveries: list[Delivery],
        recorder: OutcomeRecorder,
    ) -> None:
        message = ctx.messages.get(message_id)
        if message is None:
            raise RuntimeError(f"delivery points at missing message {message_id}")
        org = ctx.orgs.get(message.org_id)
        blocked = list(org.blocked_domains or []) if org else []
        org_limits = parse_limits(org.throttle) if org and org.throttle else Limits()
        found = ctx.routes[message_id]
        route = found if isinstance(found, Route) else None
        suppressed = ctx.suppressed.get(message.org_id, set())

        outcomes: list[Outcome] = []
        pending: list[Delivery] = []
        for d in deliveries:
            decided = check_suppression(d, suppressed) or check_blocked_domain(d, blocked)
            if decided is not None:
                outcomes.append(decided)
            else:
                pending.append(d)
        if pending and route is not None:
            pending, waiting = await self._check_throttle(
                message, pending, org_limits.tightened(route.provider_limits)
            )
            outcomes.extend(waiting)
        if pending:
            error = found if isinstance(found, ChannelError) else None
            outcomes.extend(await self._deliver(message, pending, route, error))
        await recorder.add(outcomes, route.setting_id if route else None)

    async def _check_throttle(
        self, message: Message, pending: list[Delivery], limits: Limits
    ) -> tuple[list[Delivery], list[Outcome]]:
        """Split `pending` into those the mailbox's allowance lets go now and those that wait."""
        if not limits.any:
            return pending, []
        now = utcnow()
        mailbox = f"{message.org_id}:{message.channel}:{message.from_address.lower()}"
        async with self.db.session() as s, s.begin():
            allowed, retry_at = await reserve(
                s,
                mailbox,
                message.org_id,
                limits,
                len(pending),
                now,
                postgres=not self.db.is_sqlite,
            )
        if retry_at is None:
            return pending, []
        return pending[:allowed], throttled(pending[allowed:], retry_at, now)

    async def _deliver(
        self,
        message: Message,
        pending: list[Delivery],
        route: Route | None,
        route_error: ChannelError | None,
    ) -> list[Outcome]:
        if route is None:
            return [
                Outcome(
                    d.id,
                    d.recipient,
                    DeliveryState.FAILED,
                    reason=REASON_CHANNEL_ERROR,
                    diagnostic=str(route_error),
                )
                for d in pending
            ]
        outbound = OutboundMessage(
            message_id=message.id,
            org_id=message.org_id,
            user_id=message.user_id,
            from_address=message.from_address,
            raw=message.raw,
            recipients=tuple(Recipient(d.id, d.recipient) for d in pending),
            needs_smtputf8=message.needs_smtputf8,
        )
        started = time.perf_counter()
        try:
            return await route.channel.deliver(outbound)
        except Exception as exc:
            log.exception("channel %s raised for message %s", route.channel.name, message.id)
            return [
                Outcome(
                    d.id,
                    d.recipient,
                    DeliveryState.DEFERRED,
                    reason=REASON_CHANNEL_ERROR,
                    diagnostic=f"internal error in the {route.channel.name} channel: {exc}",
                )
                for d in pending
            ]
        finally:
            self.metrics.attempt_seconds.labels(route.channel.name).observe(
                time.perf_counter() - started
            )
