"""Delivery state changes against a worker's lease, on SQLite and PostgreSQL: an operator's
retry or purge never hands a delivery a worker holds to a second worker, and parked mail
waits without spending attempts and is released in its original order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from test_cli import cli_env, run
from test_queue import claim, seed

from postway.channels.base import Outcome
from postway.delivery.outcomes import record_outcomes
from postway.delivery.queue_admin import get_delivery, purge
from postway.delivery.retry import RetryPolicy
from postway.delivery.transitions import release_parked
from postway.domain.states import (
    REASON_CHANNEL_DISCONNECTED,
    REASON_CHANNEL_PAUSED,
    DeliveryState,
)
from postway.errors import Conflict
from postway.store.models import Delivery, DeliveryEvent, utcnow

POLICY = RetryPolicy(base_seconds=0.05, max_seconds=0.1)


async def events_of(env, delivery_id: str) -> list[str]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(
            select(DeliveryEvent.type)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        )
        return list(rows)


async def row(env, delivery_id: str) -> Delivery:
    async with env.rt.db.session() as s:
        d = await s.get(Delivery, delivery_id)
        assert d is not None
        return d


@pytest.mark.parametrize("via", ["api", "cli"])
async def test_retry_of_a_held_delivery_is_not_claimed_by_a_second_worker(
    env, smtp_server, tmp_path, via
):
    srv = await smtp_server()
    acct, iid = await env.relay_sender(srv.port, "ops@acme.example")
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": iid, "to": ["a@client.example"], "text": "x"}
    )
    mid = r.json()["id"]
    did = (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"][0]["id"]

    assert await claim(env, "worker-a") == [did]  # A is sending it now
    if via == "api":
        r = await acct.client.post(f"/api/v1/deliveries/{did}/retry")
        assert r.status_code == 200, r.text
    else:
        cenv = cli_env(
            tmp_path, env.rt.settings.database_url, POSTWAY_SECRET_KEY=env.rt.settings.secret_key
        )
        res = await run(cenv, "queue", "retry", did)
        assert res.returncode == 0, res.stderr
    # Before the fix the retry made it due again with A's lease still on it: B took it too.
    assert await claim(env, "worker-b") == []
    d = await row(env, did)
    assert d.lease_owner == "worker-a" and d.attempts == 1

    await record_outcomes(
        env.rt.db, "worker-a", [Outcome(did, "a@client.example", DeliveryState.SENT)], POLICY
    )
    d = await row(env, did)
    assert d.state == "sent" and d.due_at is None and d.lease_owner is None
    assert await events_of(env, did) == ["queued", "retry-requested", "sent"]
    assert await claim(env, "worker-b") == []


async def test_retry_of_a_waiting_delivery_makes_it_due_now(env):
    (did,) = await seed(env, 1)
    assert await claim(env, "worker-a") == [did]
    deferred = Outcome(did, "r0@client.example", DeliveryState.DEFERRED, diagnostic="451 later")
    env.rt.settings.retry_base_seconds = 3600
    await record_outcomes(env.rt.db, "worker-a", [deferred], RetryPolicy(3600, 7200))
    assert await claim(env, "worker-b") == []  # deferred an hour
    async with env.rt.db.session() as s, s.begin():
        from postway.delivery.queue_admin import retry_now

        retry_now(s, await get_delivery(s, did), env.rt.settings, "ops")
    assert await claim(env, "worker-b") == [did]
    assert (await row(env, did)).attempts == 2


async def test_purge_of_a_held_delivery_is_refused_until_its_result_is_in(env):
    (did,) = await seed(env, 1)
    assert await claim(env, "worker-a") == [did]
    with pytest.raises(Conflict, match="being sent right now"):
        async with env.rt.db.session() as s, s.begin():
            purge(s, await get_delivery(s, did), "ops")
    d = await row(env, did)
    assert d.state == "queued" and d.lease_owner == "worker-a"
    assert await claim(env, "worker-b") == []
    deferred = Outcome(did, "r0@client.example", DeliveryState.DEFERRED, diagnostic="451 later")
    await record_outcomes(env.rt.db, "worker-a", [deferred], RetryPolicy(3600, 7200))
    async with env.rt.db.session() as s, s.begin():
        purge(s, await get_delivery(s, did), "ops")
    d = await row(env, did)
    assert (d.state, d.reason, d.due_at, d.lease_owner) == ("failed", "purged", None, None)
    assert await events_of(env, did) == ["queued", "deferred", "failed"]


async def test_parked_mail_keeps_its_attempts_and_is_released_in_original_order(env):
    ids = await seed(env, 4)
    async with env.rt.db.session() as s, s.begin():
        # distinct creation times, newest first in id order, to see the order come back
        base = utcnow() - timedelta(minutes=10)
        for n, i in enumerate(ids):
            d = await s.get(Delivery, i)
            d.created_at = base + timedelta(seconds=len(ids) - n)
    assert sorted(await claim(env, "worker-a")) == sorted(ids)
    until = utcnow() + timedelta(hours=1)
    wait = (until - utcnow()).total_seconds()
    parked = [
        Outcome(ids[0], "r0", DeliveryState.DEFERRED, reason=REASON_CHANNEL_PAUSED,
                retry_after=wait)
    ] + [
        Outcome(i, "r", DeliveryState.DEFERRED, reason=REASON_CHANNEL_DISCONNECTED,
                diagnostic="Reconnect your Gmail account on the Delivery channel page.")
        for i in ids[1:]
    ]  # fmt: skip
    await record_outcomes(env.rt.db, "worker-a", parked, POLICY)
    for i in ids:
        d = await row(env, i)
        assert d.state == "deferred" and d.attempts == 0 and d.lease_owner is None
        assert d.due_at is not None and d.due_at > utcnow() + timedelta(minutes=50)
    assert (await row(env, ids[1])).due_at == (await row(env, ids[1])).expires_at
    assert await claim(env, "worker-b") == []

    async with env.rt.db.session() as s, s.begin():
        user_id = (await s.get(Delivery, ids[0])).user_id
        released = await release_parked(s, Delivery.user_id == user_id, now=utcnow(), by="test")
    assert released == list(reversed(ids))  # oldest first
    got = []
    for _ in ids:
        got += await claim(env, "worker-b", limit=1)
    assert got == list(reversed(ids))
    for i in ids:
        d = await row(env, i)
        assert d.attempts == 1 and d.reason is None
        assert await events_of(env, i) == ["queued", "parked", "released"]
