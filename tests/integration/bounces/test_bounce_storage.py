"""Bounce storage over the real intake: a message is stored once however many VERP addresses it
names, each client has daily quotas, and raw messages go when the retention period ends while
what they did stays recorded."""

from __future__ import annotations

from datetime import timedelta

import aiosmtplib
import pytest
from bounce_support import (
    build_dsn,
    build_dsn_for_many,
    delivery,
    seed_delivered,
    seed_delivered_many,
    send,
)
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from postway.bounces.apply import reprocess_failed
from postway.bounces.storage import prune_bounce_bodies, store_bounce
from postway.store.models import BounceBody, BounceMessage, Suppression, utcnow


async def bounce_rows(env) -> list[BounceMessage]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(
            select(BounceMessage)
            .options(selectinload(BounceMessage.body))
            .order_by(BounceMessage.received_at, BounceMessage.rcpt_to)
        )
        return list(rows)


async def stored_bodies(env) -> tuple[int, int]:
    """How many raw messages are stored, and their bytes as the database holds them."""
    async with env.rt.db.session() as s:
        count, size = (
            await s.execute(
                select(func.count(), func.coalesce(func.sum(func.length(BounceBody.raw)), 0))
            )
        ).one()
        return int(count), int(size)


async def test_one_message_to_twenty_tokens_is_stored_once_and_each_is_processed(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered_many(
        env, rep.email, [f"user{i:02d}@client.example" for i in range(20)]
    )
    raw = build_dsn_for_many(seeded) + b"x" * 60 + b"\r\n"  # padding: a visible size
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
        errors, _ = await smtp.sendmail("", [x.verp for x in seeded], raw)
        assert errors == {}
    await intake.drain()

    rows = await bounce_rows(env)
    assert len(rows) == 20 and len({r.raw_sha256 for r in rows}) == 1
    count, size = await stored_bodies(env)
    assert count == 1 and size == rows[0].size >= len(raw) - 8  # once, not 20 times
    assert all(r.raw == rows[0].raw for r in rows)
    # ... and each of the 20 deliveries got its own outcome from its own token
    assert sorted((r.status, r.delivery_id) for r in rows) == sorted(
        ("processed", x.delivery_id) for x in seeded
    )
    for x in seeded:
        d = await delivery(env, x.delivery_id)
        assert (d.state, d.reason, d.hard) == ("bounced", "userunknown", True)

    # The same message again (a sender retrying after a lost 250) adds rows, not bytes.
    await send(intake.port, seeded[0].verp, raw)
    await intake.drain()
    assert await stored_bodies(env) == (1, size)


async def test_retention_deletes_old_raw_messages_and_keeps_the_decisions(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "gone@client.example")
    await send(intake.port, seeded.verp, build_dsn(seeded))
    await send(intake.port, seeded.verp, b"Subject: hm\r\n\r\nnot a bounce at all\r\n")
    await intake.drain()
    # A message stored long ago that was never processed (the intake died) must survive.
    (pending,) = await store_bounce(
        env.rt.db, mail_from="", rcpt_tos=[seeded.verp], peer="192.0.2.7",
        raw=b"Subject: pending\r\n\r\nstill to do\r\n", now=utcnow() - timedelta(days=90),
    )  # fmt: skip
    before = {r.id: (r.status, r.delivery_id, r.error) for r in await bounce_rows(env)}
    assert sorted(s for s, _, _ in before.values()) == ["failed", "processed", "received"]

    kept = await prune_bounce_bodies(
        env.rt.db, retention_days=30, now=utcnow() + timedelta(days=29)
    )
    assert kept.bodies == 0 and (await stored_bodies(env))[0] == 3

    pruned = await prune_bounce_bodies(
        env.rt.db, retention_days=30, now=utcnow() + timedelta(days=31)
    )
    assert pruned.bodies == 2 and pruned.bytes > 0
    rows = await bounce_rows(env)
    assert {r.id: (r.status, r.delivery_id, r.error) for r in rows} == before  # decisions kept
    assert {r.id for r in rows if r.body is not None} == {pending}
    assert all(r.raw == b"" for r in rows if r.id != pending)
    d = await delivery(env, seeded.delivery_id)
    assert (d.state, d.reason) == ("bounced", "userunknown")
    async with env.rt.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Suppression)) == 1
    # A review row whose message is gone is left as it was by --retry.
    await reprocess_failed(env.rt.db, env.rt.settings)
    assert {r.id: (r.status, r.error) for r in await bounce_rows(env)} == {
        k: (v[0], v[2]) for k, v in before.items()
    }


async def test_daily_quota_per_client_refuses_with_452_before_the_body(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "quota@client.example")
    env.rt.settings.bounce_peer_daily_reports = 2
    for i in range(2):
        await send(intake.port, seeded.verp, f"Subject: {i}\r\n\r\nping\r\n".encode())
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as over:
            await smtp.mail("")
        assert over.value.code == 452
    # another client address is not affected
    other = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=intake.port, timeout=10, source_address=("127.0.0.2", 0)
    )
    async with other:
        assert (await other.mail(""))[0] == 250

    env.rt.settings.bounce_peer_daily_reports = 1000
    env.rt.settings.bounce_peer_daily_bytes = 6_000
    await send(intake.port, seeded.verp, b"Subject: a\r\n\r\n" + (b"a" * 70 + b"\r\n") * 50)
    big = b"Subject: b\r\n\r\n" + (b"b" * 70 + b"\r\n") * 50  # 3.6 KB more: over 6,000
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
            await smtp.mail("", options=[f"SIZE={len(big)}"])
        assert declared.value.code == 452
        await smtp.rset()
        await smtp.mail("")  # undeclared: refused once the bytes are in
        await smtp.rcpt(seeded.verp)
        with pytest.raises(aiosmtplib.SMTPDataError) as counted:
            await smtp.data(big)
        assert counted.value.code == 452
    await intake.drain()
    assert len(await bounce_rows(env)) == 3
