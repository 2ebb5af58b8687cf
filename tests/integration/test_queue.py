"""The durable queue on SQLite and PostgreSQL: claims, leases, fencing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from postway.channels.base import Outcome
from postway.delivery import queue
from postway.delivery.outcomes import record_outcomes
from postway.delivery.retry import RetryPolicy
from postway.delivery.submit import SendRequest, submit_message
from postway.domain.states import DeliveryState
from postway.store.identities import create_identity
from postway.store.models import Delivery, utcnow
from postway.store.users import create_user, principal_of


async def seed(env, recipients: int) -> list[str]:
    async with env.rt.db.session() as s, s.begin():
        who = principal_of(await create_user(s, "q@acme.example", "password123"))
        ident = await create_identity(s, who, name="Q", email="q@acme.example", channel="smtp")
        from postway.domain.states import ChannelName
        from postway.store.channel_settings import save_setting

        await save_setting(
            s,
            env.rt.box,
            who.org_id,
            who.user_id,
            ChannelName.SMTP,
            {
                "host": "127.0.0.1",
                "port": 1,
                "security": "none",
                "username": None,
                "password": None,
                "keep_password": False,
                "auth": "auto",
            },
        )
        _, ds = await submit_message(
            s,
            env.rt.settings,
            who,
            SendRequest(
                identity_id=ident.id,
                to=[f"r{i}@client.example" for i in range(recipients)],
                text="x",
            ),
        )
        return [d.id for d in ds]


async def claim(env, worker: str, limit: int = 100, lease: float = 60.0, now=None):
    async with env.rt.db.session() as s, s.begin():
        rows = await queue.claim_due(
            s, worker, now or utcnow(), limit, lease, postgres=not env.rt.db.is_sqlite
        )
        return [r.id for r in rows]


async def test_concurrent_claims_never_overlap(env):
    ids = await seed(env, 60)
    results = await asyncio.gather(*(claim(env, f"w{i}", limit=7) for i in range(12)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 60
    assert set(claimed) == set(ids)
    assert await claim(env, "late") == []  # all leased


async def test_expired_lease_is_taken_over_and_fences_the_old_worker(env):
    ids = await seed(env, 3)
    assert len(await claim(env, "dead-worker", lease=60)) == 3
    # 61 s later the lease is over: another worker takes the deliveries
    later = utcnow() + timedelta(seconds=61)
    assert sorted(await claim(env, "new-worker", now=later)) == sorted(ids)
    policy = RetryPolicy()
    # the dead worker wakes up and reports: its result is dropped
    await record_outcomes(
        env.rt.db,
        "dead-worker",
        [Outcome(i, "x", DeliveryState.FAILED, diagnostic="stale") for i in ids],
        policy,
    )
    await record_outcomes(
        env.rt.db, "new-worker", [Outcome(i, "x", DeliveryState.SENT) for i in ids], policy
    )
    async with env.rt.db.session() as s:
        for i in ids:
            d = await s.get(Delivery, i)
            assert d.state == "sent" and d.due_at is None and d.attempts == 2


async def test_deferred_until_queue_lifetime_then_expired(env):
    env.rt.settings.queue_lifetime_seconds = 0.5
    ids = await seed(env, 1)
    assert await claim(env, "w") == ids
    policy = RetryPolicy(base_seconds=0.05, max_seconds=0.1)
    deferred = Outcome(ids[0], "r0@client.example", DeliveryState.DEFERRED, diagnostic="451 later")
    await record_outcomes(env.rt.db, "w", [deferred], policy)
    async with env.rt.db.session() as s:
        d = await s.get(Delivery, ids[0])
        assert d.state == "deferred" and d.due_at is not None
    # keep failing until the lifetime is over
    for _ in range(40):
        await asyncio.sleep(0.05)
        got = await claim(env, "w")
        if got:
            await record_outcomes(
                env.rt.db,
                "w",
                [
                    Outcome(
                        ids[0], "r0@client.example", DeliveryState.DEFERRED, diagnostic="451 later"
                    )
                ],
                policy,
            )
        async with env.rt.db.session() as s:
            d = await s.get(Delivery, ids[0])
        if d.state == "failed":
            break
    assert d.state == "failed" and d.reason == "expired"
    assert "451 later" in d.diagnostic and d.due_at is None


async def test_results_recorded_together_in_few_statements_and_fenced(env):
    """Many results in one call: one executemany UPDATE for the differing ones, one UPDATE for
    a group given identical values, one INSERT for all events; a late result for deliveries
    another worker took over is dropped (their row and history untouched)."""
    from collections import Counter

    from sqlalchemy import event, func, select
    from sqlalchemy.engine import Engine

    from postway.store.models import DeliveryEvent

    ids = await seed(env, 12)
    assert len(await claim(env, "a", lease=60)) == 12
    taken = await claim(env, "b", limit=4, now=utcnow() + timedelta(seconds=61))
    held = [i for i in ids if i not in taken]
    delivered, throttled = held[:5], held[5:]
    outcomes = [
        Outcome(i, "r", DeliveryState.SENT, reply_code=250, diagnostic=f"250 queued as Q{n}")
        for n, i in enumerate(delivered)
    ] + [
        Outcome(i, "r", DeliveryState.DEFERRED, reason="throttled", retry_after=60.0)
        for i in throttled
    ] + [Outcome(i, "r", DeliveryState.FAILED, diagnostic="stale") for i in taken]  # fmt: skip
    statements: Counter[str] = Counter()

    def count(conn, cursor, statement, *_):
        statements[" ".join(statement.split()[:2])] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        await record_outcomes(env.rt.db, "a", outcomes, RetryPolicy())
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert statements["INSERT INTO"] == 1
    assert statements["UPDATE deliveries"] == 2
    async with env.rt.db.session() as s:
        rows = {d.id: d for d in await s.scalars(select(Delivery).where(Delivery.id.in_(ids)))}
        events = dict(
            (
                await s.execute(
                    select(DeliveryEvent.delivery_id, func.count())
                    .where(DeliveryEvent.delivery_id.in_(ids))
                    .group_by(DeliveryEvent.delivery_id)
                )
            ).all()
        )
    for n, i in enumerate(delivered):
        d = rows[i]
        assert (d.state, d.due_at, d.lease_owner) == ("sent", None, None)
        assert d.diagnostic == f"250 queued as Q{n}" and events[i] == 2  # queued, sent
    for i in throttled:
        d = rows[i]
        assert (d.state, d.lease_owner, d.attempts) == ("queued", None, 0)  # not an attempt
        assert d.due_at is not None and d.due_at > utcnow() + timedelta(seconds=50)
        assert events[i] == 2  # queued, throttled
    for i in taken:
        d = rows[i]
        assert (d.state, d.lease_owner, d.attempts, d.diagnostic) == ("queued", "b", 2, None)
        assert events[i] == 1  # queued only
