"""The invariants `transitions.transition` keeps, over random sequences of changes on a real
SQLite database: claims by two workers, their results (on time or after losing the lease),
operators' retries, resends and purges, bounces, complaints, parks and releases."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postway.channels.base import Outcome
from postway.delivery import queue
from postway.delivery.transitions import (
    PARK_REASONS,
    Bounce,
    Change,
    Complaint,
    Defer,
    Finish,
    Park,
    Purge,
    Resend,
    RetryNow,
    ThrottleWait,
    leased,
    release_parked,
    transition,
)
from postway.domain.states import DeliveryState
from postway.errors import Conflict
from postway.store.db import Database
from postway.store.models import Delivery, DeliveryEvent, Message, utcnow
from postway.store.users import create_user

LEASE = 60.0
WORKERS = ("w1", "w2")
FINAL = [s for s in DeliveryState if s.is_final]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await database.upgrade()
    yield database
    await database.dispose()


async def new_deliveries(db: Database, n: int, now: datetime) -> list[str]:
    async with db.session() as s, s.begin():
        user = await create_user(s, "u@acme.example", "pw-123456789")
        m = Message(
            org_id=user.org_id, user_id=user.id, channel="smtp", from_address="u@acme.example",
            message_id_header="<x@acme.example>", raw=b"x", size=1,
        )  # fmt: skip
        s.add(m)
        ds = [
            Delivery(
                message=m, org_id=user.org_id, user_id=user.id, recipient=f"r{i}@client.example",
                recipient_domain="client.example", channel="smtp", state="queued", due_at=now,
                expires_at=now + timedelta(days=5), created_at=now + timedelta(seconds=i),
            )  # fmt: skip
            for i in range(n)
        ]
        s.add_all(ds)
        await s.flush()
        return [d.id for d in ds]


@dataclass
class Model:
    """What the test expects of each delivery, kept beside the database."""

    attempts: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)


def holder_changes(rng: random.Random, now: datetime, d_id: str) -> Change:
    o = Outcome(d_id, "r@client.example", rng.choice(FINAL), reason="x", diagnostic="said so")
    return rng.choice(
        [
            lambda: Finish(o),
            lambda: Defer(
                Outcome(d_id, "r", DeliveryState.DEFERRED, diagnostic="451"),
                now + timedelta(seconds=rng.uniform(1, 300)),
                unknown=rng.random() < 0.2,
            ),
            lambda: ThrottleWait(now + timedelta(seconds=rng.uniform(1, 300)), "window"),
            lambda: Park(rng.choice(PARK_REASONS), rng.choice([None, now + timedelta(hours=1)])),
        ]
    )()


def outside_changes(rng: random.Random, now: datetime) -> Change:
    makers: list[Callable[[], Change]] = [
        lambda: RetryNow("ops"),
        lambda: Resend("ops", now + timedelta(days=5)),
        lambda: Purge("ops"),
        lambda: Bounce("userunknown", "5.1.1", "550 no such user", True, "mx.test", 550),
        lambda: Complaint({"source": "feedback-loop"}),
        lambda: Park(rng.choice(PARK_REASONS), rng.choice([None, now + timedelta(minutes=5)])),
    ]
    return rng.choice(makers)()


async def check(db: Database, ids: list[str], model: Model) -> None:
    async with db.reader() as s:
        for i in ids:
            d = await s.get(Delivery, i)
            assert d is not None
            final = DeliveryState(d.state).is_final
            assert (d.due_at is None) == final, (d.state, d.due_at)
            assert not (final and d.lease_owner is not None)
            assert d.attempts == model.attempts[i]
            count = await s.scalar(
                select(func.count())
                .select_from(DeliveryEvent)
                .where(DeliveryEvent.delivery_id == i)
            )
            assert count == model.events[i]


@pytest.mark.parametrize("seed", range(12))
async def test_random_sequences_keep_the_invariants(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    ids = await new_deliveries(db, 3, now)
    model = Model({i: 0 for i in ids}, {i: 0 for i in ids})
    for _ in range(40):
        now += timedelta(seconds=rng.choice([0, 1, 30, 61, 400, 4000]))
        step = rng.random()
        if step < 0.3:
            await claim_step(db, rng.choice(WORKERS), now, ids, model)
        elif step < 0.6:
            await holder_step(db, rng, now, rng.choice(ids), model)
        elif step < 0.9:
            await outside_step(db, rng, now, rng.choice(ids), model)
        else:
            async with db.session() as s, s.begin():
                for i in await release_parked(s, Delivery.id.in_(ids), now=now):
                    model.events[i] += 1
        await check(db, ids, model)


async def claim_step(db: Database, worker: str, now: datetime, ids: list[str], model: Model):
    async with db.session() as s, s.begin():
        before = {i: await s.get(Delivery, i) for i in ids}
        live = {i for i, d in before.items() if d is not None and leased(d, now)}
        s.expunge_all()
        got = await queue.claim_due(s, worker, now, 10, LEASE, postgres=False)
    for d in got:
        assert d.id not in live, "a leased delivery was handed to a second worker"
        model.attempts[d.id] += 1  # a real attempt starts


async def holder_step(db: Database, rng: random.Random, now: datetime, i: str, model: Model):
    holder = rng.choice(WORKERS)
    change = holder_changes(rng, now, i)
    async with db.session() as s, s.begin():
        d = await s.get(Delivery, i)
        assert d is not None
        holds = d.lease_owner == holder
        event = transition(s, d, change, now=now, holder=holder)
    assert (event is not None) == holds  # only the lease's owner records a result
    if event is not None:
        model.events[i] += 1
        if isinstance(change, ThrottleWait | Park):
            model.attempts[i] -= 1  # not an attempt: the claim's count is given back


async def outside_step(db: Database, rng: random.Random, now: datetime, i: str, model: Model):
    change = outside_changes(rng, now)
    try:
        async with db.session() as s, s.begin():
            d = await s.get(Delivery, i)
            assert d is not None
            was_leased, owner, due = leased(d, now), d.lease_owner, d.due_at
            event = transition(s, d, change, now=now)
            if was_leased and not isinstance(change, Bounce):
                # an operator's change never frees a delivery a worker holds
                assert (d.lease_owner, d.due_at) == (owner, due)
    except Conflict:
        return
    if event is not None:
        model.events[i] += 1


async def test_holder_only_changes_need_the_holder(db: Database) -> None:
    now = utcnow()
    (i,) = await new_deliveries(db, 1, now)
    async with db.session() as s, s.begin():
        d = await s.get(Delivery, i)
        with pytest.raises(ValueError):
            transition(s, d, ThrottleWait(now), now=now)
        with pytest.raises(ValueError):
            transition(s, d, RetryNow("ops"), now=now, holder="w1")
