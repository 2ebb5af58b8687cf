"""`transition_many` (a worker's results recorded together in Core statements) against
`transition` (one ORM change at a time) on a real SQLite database: twin deliveries given the
same random results end with the same columns and the same events, deliveries whose lease
another worker took are left alone, and the writes are a few statements, not one per row."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from postway.channels.base import Outcome
from postway.delivery import queue
from postway.delivery.outcomes import OutcomeRecorder
from postway.delivery.retry import RetryPolicy
from postway.delivery.transitions import (
    PARK_REASONS,
    Change,
    Defer,
    Finish,
    InvariantBroken,
    Park,
    ThrottleWait,
    transition,
    transition_many,
)
from postway.domain.states import DeliveryState
from postway.store.db import Database
from postway.store.models import Delivery, DeliveryEvent, Message, utcnow
from postway.store.users import create_user

PAIRS = 30
COLUMNS = (
    "state", "reason", "status", "reply_code", "diagnostic", "remote_mta", "hard", "attempts",
    "due_at", "lease_owner", "updated_at", "expires_at",
)  # fmt: skip


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
                message=m,
                org_id=user.org_id,
                user_id=user.id,
                recipient=f"r{i}@client.example",
                recipient_domain="client.example",
                channel="smtp",
                state="queued",
                due_at=now,
                expires_at=now + timedelta(days=5),
                created_at=now,
                updated_at=now,
            )
            for i in range(n)
        ]
        s.add_all(ds)
        await s.flush()
        return [d.id for d in ds]


def result(rng: random.Random, now: datetime, d_id: str) -> Change:
    """A holder's result, drawn from few values so that groups of identical writes occur."""
    state = rng.choice([s for s in DeliveryState if s.is_final])
    reply = rng.choice(["250 ok", "250 ok: queued as Q1", "550 no such user"])
    o = Outcome(
        d_id, "r", state, reason=rng.choice([None, "x"]), diagnostic=reply,
        reply_code=int(reply[:3]), remote_mta="mx.test", detail={"ip": "1.2.3.4"},
        hard=rng.choice([None, True, False]),
    )  # fmt: skip
    later = now + timedelta(seconds=rng.choice([60, 600]))
    makers = [
        lambda: Finish(o),
        lambda: Defer(
            Outcome(d_id, "r", DeliveryState.DEFERRED, diagnostic="451"),
            later,
            unknown=rng.random() < 0.3,
        ),  # fmt: skip
        lambda: ThrottleWait(later, "window"),
        lambda: Park(rng.choice(PARK_REASONS), rng.choice([None, later]), rng.choice([None, "n"])),
    ]
    return rng.choice(makers)()


async def snapshot(db: Database, i: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    async with db.reader() as s:
        d = await s.get(Delivery, i)
        assert d is not None
        events = await s.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == i).order_by(DeliveryEvent.id)
        )
        return (
            tuple(getattr(d, c) for c in COLUMNS),
            [(e.type, e.state, e.detail) for e in events],
        )


@pytest.mark.parametrize("seed", range(6))
async def test_batch_equals_one_at_a_time(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    ids = await new_deliveries(db, 2 * PAIRS, now)
    singles, batched = ids[:PAIRS], ids[PAIRS:]
    async with db.session() as s, s.begin():
        assert len(await queue.claim_due(s, "w1", now, 2 * PAIRS, 60, postgres=False)) == 2 * PAIRS
        lost = [k for k in range(PAIRS) if rng.random() < 0.25]  # taken over by w2
        taken = [singles[k] for k in lost] + [batched[k] for k in lost]
        await s.execute(update(Delivery).where(Delivery.id.in_(taken)).values(lease_owner="w2"))
    draws = [rng.randrange(1 << 30) for _ in range(PAIRS)]
    now += timedelta(seconds=1)

    async with db.session() as s, s.begin():
        for k, i in enumerate(singles):
            d = await s.get(Delivery, i)
            assert d is not None
            transition(s, d, result(random.Random(draws[k]), now, i), now=now, holder="w1")

    statements: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements[" ".join(statement.split()[:3])] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        async with db.session() as s, s.begin():
            rows = {d.id: d for d in await queue.held(s, "w1", batched, postgres=False)}
            assert set(rows) == set(batched) - set(taken)
            changes = [(rows[i], result(random.Random(draws[k]), now, i)) for k, i in
                       enumerate(batched) if i in rows]  # fmt: skip
            changed = await transition_many(s, changes, now=now, holder="w1")
    finally:
        event.remove(Engine, "before_cursor_execute", count)

    applied = 0
    for a, b in zip(singles, batched, strict=True):
        single, batch = await snapshot(db, a), await snapshot(db, b)
        assert single == batch
        applied += len(batch[1])
        if b in taken:
            assert batch[0][COLUMNS.index("lease_owner")] == "w2" and batch[1] == []
    assert len(changed) == applied == PAIRS - len(lost)
    # one INSERT for every event; UPDATEs: at most one per kind of result and group of
    # identical values (4 kinds x few values), never one per delivery
    assert statements["INSERT INTO delivery_events"] == 1
    assert statements["UPDATE deliveries SET"] <= 12 < applied


@pytest.mark.parametrize("values", ["distinct", "identical"])  # executemany / one UPDATE
async def test_a_late_batch_changes_nothing(db: Database, values: str) -> None:
    now = utcnow()
    ids = await new_deliveries(db, 5, now)
    async with db.session() as s, s.begin():
        await queue.claim_due(s, "w1", now, 5, 60, postgres=False)
    async with db.session() as s, s.begin():
        rows = await queue.held(s, "w1", ids, postgres=False)
    # read outside the writing transaction (a misuse): the lease runs out, w2 takes them over
    later = now + timedelta(seconds=61)
    async with db.session() as s, s.begin():
        assert len(await queue.claim_due(s, "w2", later, 5, 60, postgres=False)) == 5
    before = [await snapshot(db, i) for i in ids]
    notes = [f"n{k}" if values == "distinct" else "same" for k in range(5)]
    changes: list[tuple[queue.Held, Change]] = [
        (r, Finish(Outcome(r.id, "r", DeliveryState.FAILED, diagnostic=n)))
        for r, n in zip(rows, notes, strict=True)
    ]
    with pytest.raises(InvariantBroken):  # the stale rows still name w1; the UPDATEs do not
        async with db.session() as s, s.begin():
            await transition_many(s, changes, now=later, holder="w1")
    assert [await snapshot(db, i) for i in ids] == before  # no column, no event


async def test_recorder_writes_results_of_many_messages_in_one_transaction(db: Database) -> None:
    """Results added one message at a time wait for each other (FLUSH_AT, or LINGER after
    the first): one transaction for all, not one per message."""
    now = utcnow()
    ids = await new_deliveries(db, 10, now)
    async with db.session() as s, s.begin():
        await queue.claim_due(s, "w1", now, 10, 60, postgres=False)
    statements: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements[" ".join(statement.split()[:3])] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        # a linger longer than any test: only FLUSH_AT or close sends a flush
        recorder = OutcomeRecorder(db, "w1", RetryPolicy(), None, linger=3600)
        for i in ids:
            await recorder.add([Outcome(i, "r", DeliveryState.SENT)], None)
            await asyncio.sleep(0)  # the recorder's task runs in between
        await recorder.close()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert statements["INSERT INTO delivery_events"] == 1
    assert statements["BEGIN IMMEDIATE"] == 1
    for i in ids:
        assert (await snapshot(db, i))[0][0] == "sent"
