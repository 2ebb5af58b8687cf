"""The delivery pipeline: claimed deliveries pass named steps, then the outcome is recorded.

    check suppression -> check blocked domain -> resolve route -> check account
    -> check throttle -> deliver -> record outcome

Each check is a small function that returns an `Outcome` when it decides a recipient's fate
without sending, or None to let it pass. Channels only deliver; everything else is here, once.
No database transaction is held while a channel talks to the network. A batch is loaded
without the messages' raw bytes: each message's raw is read just before it is sent and
dropped after, and the raws held at once stay within `worker_batch_bytes` (`ByteBudget`), so a
batch of large messages is never in memory whole. Messages that go
through one connected account are sent one after another, oldest first, so parked mail that
is released goes out in its original order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from postway.channels.base import AccountStatus, OutboundMessage, Outcome, Recipient
from postway.channels.registry import ChannelRegistry, Route
from postway.config import Settings
from postway.delivery.outcomes import OutcomeRecorder
from postway.delivery.retry import RetryPolicy
from postway.delivery.transitions import release_parked
from postway.domain.states import (
    REASON_BLOCKED_DOMAIN,
    REASON_CHANNEL_DISCONNECTED,
    REASON_CHANNEL_ERROR,
    REASON_CHANNEL_PAUSED,
    REASON_SUPPRESSED,
    REASON_THROTTLED,
    DeliveryState,
)
from postway.domain.throttle import Limits, limits_for
from postway.errors import ChannelError
from postway.metrics import Metrics
from postway.store.db import Database
from postway.store.models import Delivery, Message, Organisation, Suppression, utcnow
from postway.store.outage import is_outage
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


def check_account(delivery: Delivery, route: Route, now: datetime) -> Outcome | None:
    """Mail of a channel that sends through a connected account waits while the account
    cannot send: none connected or the grant refused (parked until the user reconnects,
    which releases it) or paused for a quota (parked until the pause ends). Parking spends
    no attempt. Mail still parked when its lifetime ends fails with `channel-disconnected`
    and says what the user must do."""
    if not route.needs_account:
        return None
    account = route.account
    if account is not None and account.status == AccountStatus.CONNECTED:
        return None
    paused_until: datetime | None = None  # set while the account is paused
    if account is not None and account.status == AccountStatus.PAUSED:
        if account.paused_until is None or account.paused_until <= now:
            return None  # the pause is over (the batch's load resumed the account)
        paused_until = account.paused_until
    if now >= delivery.expires_at:
        return Outcome(
            delivery.id,
            delivery.recipient,
            DeliveryState.FAILED,
            reason=REASON_CHANNEL_DISCONNECTED,
            diagnostic="not sent: your Gmail account could not send for longer than a "
            "message may wait. Connect your Gmail account again on the Delivery channel page "
            "(or choose another channel), then resend this message from Failed Deliveries.",
        )
    if account is not None and paused_until is not None:
        until = min(paused_until, delivery.expires_at)
        return Outcome(
            delivery.id,
            delivery.recipient,
            DeliveryState.DEFERRED,
            reason=REASON_CHANNEL_PAUSED,
            retry_after=max((until - now).total_seconds(), 0.0),
            diagnostic=account.reason
            or f"{account.address} is paused until {until:%Y-%m-%d %H:%M} UTC",
        )
    if account is None:
        words = (
            "no Gmail account is connected: connect yours on the Delivery channel page (or "
            "choose another channel); this mail waits and goes out once you do"
        )
    else:
        words = (
            f"{account.reason or 'Google no longer accepts the connection'}. Reconnect "
            f"{account.address} on the Delivery channel page; this mail waits and goes out, "
            "in its original order, once you do"
        )
    return Outcome(
        delivery.id,
        delivery.recipient,
        DeliveryState.DEFERRED,
        reason=REASON_CHANNEL_DISCONNECTED,
        diagnostic=words,
    )


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


class ByteBudget:
    """Bytes held at once, up to `limit`; one holder may exceed it alone (a message larger
    than the budget still goes, by itself). `peak` is the most ever held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            async with self._changed:
                self.held -= size
                self._changed.notify_all()


class RawLoader:
    """Reads raw messages when they are about to be sent; the requests made while one read
    is pending go together in the next (one query for many small messages, not one each)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, message_id: str) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._fetch())
        return await future

    async def _fetch(self) -> None:
        while self._waiting:
            await asyncio.sleep(0)  # let the other messages ready to go ask as well
            batch, self._waiting = self._waiting, {}
            try:
                async with self.db.reader() as s:
                    rows = await s.execute(
                        select(Message.id, Message.raw).where(Message.id.in_(list(batch)))
                    )
                    found: dict[str, bytes] = {mid: raw for mid, raw in rows.all()}
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for mid, future in batch.items():
                if future.done():
                    continue
                if mid in found:
                    future.set_result(found[mid])
                else:
                    future.set_exception(RuntimeError(f"message {mid} has no content"))


@dataclass
class BatchContext:
    """What the checks need for one claimed batch, read in one transaction."""

    messages: dict[str, Message] = field(default_factory=dict)
    orgs: dict[str, Organisation] = field(default_factory=dict)
    suppressed: dict[str, set[str]] = field(default_factory=dict)  # org id -> addresses
    routes: dict[str, Route | ChannelError] = field(default_factory=dict)


def _by_account(
    ctx: BatchContext, by_message: dict[str, list[Delivery]]
) -> list[list[tuple[str, list[Delivery]]]]:
    """Messages in groups that run concurrently: one group per connected account, its
    messages oldest first (a mailbox sends in order), and every other message alone."""
    groups: dict[str, list[tuple[str, list[Delivery]]]] = defaultdict(list)

    def created(item: tuple[str, list[Delivery]]) -> tuple[datetime, str]:
        m = ctx.messages.get(item[0])
        return (m.created_at if m is not None else datetime.max.replace(tzinfo=UTC), item[0])

    for message_id, deliveries in sorted(by_message.items(), key=created):
        route = ctx.routes.get(message_id)
        account = route.account if isinstance(route, Route) else None
        groups[f"account:{account.id}" if account else message_id].append((message_id, deliveries))
    return list(groups.values())


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
        self.raw_bytes = ByteBudget(settings.worker_batch_bytes)
        self._raws = RawLoader(db)
        # Deliveries handed to process() whose message is not finished yet, over every batch
        # running; `finished` is set whenever some finish, so the worker can claim more while
        # a slow destination still holds part of a batch.
        self.in_flight = 0
        self.finished = asyncio.Event()

    def _done(self, n: int) -> None:
        self.in_flight -= n
        self.finished.set()

    async def process(self, claimed: list[Delivery]) -> None:
        """Run a claimed batch: one read for the whole batch, then each message through the
        steps concurrently, with outcomes written in group commits as they complete."""
        self.in_flight += len(claimed)
        left = [len(claimed)]
        try:
            by_message: dict[str, list[Delivery]] = defaultdict(list)
            for d in claimed:
                by_message[d.message_id].append(d)
            recorder = OutcomeRecorder(
                self.db,
                self.worker_id,
                self.policy,
                self.metrics,
                hold_seconds=self.settings.lease_seconds,
            )
            try:
                try:
                    ctx = await self._load(by_message)
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    # Nothing attempted: given back as soon as the database returns, rather
                    # than left to wait out the lease.
                    recorder.release([d.id for d in claimed])
                    return
                await asyncio.gather(
                    *(
                        self._in_order(ctx, group, recorder, left)
                        for group in _by_account(ctx, by_message)
                    )
                )
            finally:
                await recorder.close()
        finally:
            self._done(left[0])

    async def _in_order(
        self,
        ctx: BatchContext,
        group: list[tuple[str, list[Delivery]]],
        recorder: OutcomeRecorder,
        left: list[int],
    ) -> None:
        for message_id, deliveries in group:
            await self._guarded(ctx, message_id, deliveries, recorder)
            left[0] -= len(deliveries)
            self._done(len(deliveries))

    async def _load(self, by_message: dict[str, list[Delivery]]) -> BatchContext:
        ctx = BatchContext()
        async with self.db.reader() as s, s.begin():
            # Without the raw bytes (read per message when sent); touching them here raises.
            rows = await s.scalars(
                select(Message)
                .options(defer(Message.raw, raiseload=True))
                .where(Message.id.in_(list(by_message)))
            )
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
        await self._resume_accounts(ctx)
        return ctx

    async def _resume_accounts(self, ctx: BatchContext) -> None:
        """Accounts whose pause has ended send again: their parked mail is released (due at
        once, in original order), including mail of this batch's messages not yet claimed."""
        accounts = self.registry.accounts
        if accounts is None:
            return
        now = utcnow()
        due: dict[str, tuple[str, str]] = {}  # account id -> (user id, channel)
        for message_id, r in ctx.routes.items():
            if (
                isinstance(r, Route)
                and r.account is not None
                and r.account.status == AccountStatus.PAUSED
                and r.account.paused_until is not None
                and r.account.paused_until <= now
            ):
                due[r.account.id] = (r.account.user_id, ctx.messages[message_id].channel)
        for account_id, (user_id, channel) in due.items():
            if await accounts.resume_if_due(account_id, now):
                async with self.db.session() as s, s.begin():
                    await release_parked(
                        s,
                        Delivery.user_id == user_id,
                        Delivery.channel == channel,
                        now=now,
                        by="the account's pause ended",
                    )

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
            except Exception as exc:
                if is_outage(exc):
                    # Not attempted (what it needs could not be read): given back, it goes
                    # again once the database returns.
                    recorder.release([d.id for d in deliveries])
                else:  # the lease runs out and the deliveries are retried; nothing is lost
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
        org_limits = limits_for(org.throttle, message.channel) if org and org.throttle else Limits()
        found = ctx.routes[message_id]
        route = found if isinstance(found, Route) else None
        suppressed = ctx.suppressed.get(message.org_id, set())

        outcomes: list[Outcome] = []
        pending: list[Delivery] = []
        now = utcnow()
        for d in deliveries:
            decided = (
                check_suppression(d, suppressed)
                or check_blocked_domain(d, blocked)
                or (check_account(d, route, now) if route is not None else None)
            )
            if decided is not None:
                outcomes.append(decided)
            else:
                pending.append(d)
        if pending and route is not None:
            pending, waiting = await self._check_throttle(
                message, pending, org_limits.tightened(route.provider_limits), route
            )
            outcomes.extend(waiting)
        if pending:
            error = found if isinstance(found, ChannelError) else None
            outcomes.extend(await self._deliver(message, pending, route, error))
        await recorder.add(outcomes, route.setting_id if route else None)

    async def _check_throttle(
        self, message: Message, pending: list[Delivery], limits: Limits, route: Route
    ) -> tuple[list[Delivery], list[Outcome]]:
        """Split `pending` into those the mailbox's allowance lets go now and those that wait.
        A connected account is one mailbox whatever alias its mail is sent as."""
        if not limits.any:
            return pending, []
        now = utcnow()
        sender = route.account.address if route.account else message.from_address
        mailbox = f"{message.org_id}:{message.channel}:{sender.lower()}"
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
        async with self.raw_bytes.hold(message.size):
            raw = await self._raws.get(message.id)
            outbound = OutboundMessage(
                message_id=message.id,
                org_id=message.org_id,
                user_id=message.user_id,
                from_address=message.from_address,
                raw=raw,
                recipients=tuple(Recipient(d.id, d.recipient) for d in pending),
                needs_smtputf8=message.needs_smtputf8,
            )
            return await self._send(route, outbound, pending)

    async def _send(
        self, route: Route, outbound: OutboundMessage, pending: list[Delivery]
    ) -> list[Outcome]:
        started = time.perf_counter()
        try:
            return await route.channel.deliver(outbound)
        except Exception as exc:
            log.exception(
                "channel %s raised for message %s", route.channel.name, outbound.message_id
            )
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
