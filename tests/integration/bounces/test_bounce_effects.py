"""A bounce sent over real SMTP to the intake changes the delivery it names, on both databases."""

from __future__ import annotations

from bounce_support import (
    FEEDBACK,
    auto_reply,
    build_arf,
    build_dsn,
    corpus,
    delivery,
    seed_delivered,
    send,
)
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from postway.bounces.apply import process_bounce
from postway.store.models import BounceMessage, DeliveryEvent, Suppression


async def events(env, delivery_id: str) -> list[DeliveryEvent]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(
            select(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        )
        return list(rows)


async def bounce_rows(env) -> list[BounceMessage]:
    async with env.rt.db.session() as s:
        return list(
            await s.scalars(
                select(BounceMessage)
                .options(selectinload(BounceMessage.body))
                .order_by(BounceMessage.received_at)
            )
        )


async def suppressions(env) -> list[Suppression]:
    async with env.rt.db.session() as s:
        return list(await s.scalars(select(Suppression)))


async def test_dsn_turns_a_delivered_message_into_a_hard_bounce(env, intake):
    rep = await env.account("rep@acme.example", admin=True)
    seeded = await seed_delivered(env, rep.email, "gone@client.example")
    code, reply = await send(intake.port, seeded.verp, build_dsn(seeded))
    assert code == 250 and "stored as" in reply
    await intake.drain()

    failed = (await rep.client.get("/api/v1/failed-deliveries")).json()
    assert failed["total"] == 1
    item = failed["items"][0]
    assert item["id"] == seeded.delivery_id and item["state"] == "bounced"
    assert (item["reason"], item["status"], item["hard"]) == ("userunknown", "5.1.1", True)
    assert item["remote_mta"] == "mx1.client.example"
    assert "User unknown" in item["diagnostic"] and item["reply_code"] == 550
    assert item["subject"] == "Hello"

    types = [e.type for e in await events(env, seeded.delivery_id)]
    assert types[-2:] == ["delivered", "bounced"]
    last = (await events(env, seeded.delivery_id))[-1]
    (row,) = await bounce_rows(env)
    assert last.detail["source"] == "dsn" and last.detail["bounce_message_id"] == row.id
    assert last.detail["previous_state"] == "delivered" and last.state == "bounced"
    assert (row.status, row.kind, row.delivery_id) == ("processed", "bounce", seeded.delivery_id)
    assert (
        row.mail_from == ""
        and row.rcpt_to == seeded.verp
        and row.raw.startswith(b"From: MAILER-DAEMON")
    )

    sup = (await rep.client.get("/api/v1/suppressions")).json()
    assert [(x["address"], x["reason"]) for x in sup] == [("gone@client.example", "userunknown")]


async def test_real_postfix_dsn_from_the_corpus(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "kijitora@client.example")
    raw = corpus("lhost-postfix-04.eml", recipient_from="kijitora@example.co.jp", to=seeded)
    await send(intake.port, seeded.verp, raw, sender="MAILER-DAEMON@mx.example")
    await intake.drain()
    d = await delivery(env, seeded.delivery_id)
    assert (d.state, d.reason, d.status, d.hard) == ("bounced", "userunknown", "5.1.1", True)
    assert d.remote_mta == "mx01.example.co.jp"


async def test_soft_bounce_bounces_without_suppression_and_is_idempotent(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "full@client.example")
    raw = build_dsn(
        seeded, status="4.2.2", diagnostic="smtp; 452 4.2.2 <{rcpt}>: Mailbox full"
    )  # a final failure after retries, for a temporary reason
    await send(intake.port, seeded.verp, raw)
    await intake.drain()
    d = await delivery(env, seeded.delivery_id)
    assert (d.state, d.reason, d.hard) == ("bounced", "mailboxfull", False)
    assert await suppressions(env) == []

    # The same stored bounce processed again, and the same DSN delivered twice: one event.
    (row,) = await bounce_rows(env)
    again = await process_bounce(env.rt.db, env.rt.settings, row.id)
    assert again is not None and again.status == "processed"
    await send(intake.port, seeded.verp, raw)
    await intake.drain()
    bounced = [e for e in await events(env, seeded.delivery_id) if e.type == "bounced"]
    assert len(bounced) == 1
    statuses = sorted(r.status for r in await bounce_rows(env))
    assert statuses == ["ignored", "processed"]


async def test_delay_notice_is_a_warning_only(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "slow@client.example")
    raw = build_dsn(
        seeded, action="delayed", status="4.4.1",
        diagnostic="smtp; 421 4.4.1 Connection timed out",
    )  # fmt: skip
    await send(intake.port, seeded.verp, raw)
    await intake.drain()
    d = await delivery(env, seeded.delivery_id)
    assert d.state == "delivered" and d.reason is None
    last = (await events(env, seeded.delivery_id))[-1]
    assert last.type == "delayed" and last.state == "delivered" and last.detail["source"] == "dsn"
    assert (await rep.client.get("/api/v1/failed-deliveries")).json()["total"] == 0


async def test_auto_reply_changes_nothing(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "away@client.example")
    before = await events(env, seeded.delivery_id)
    await send(intake.port, seeded.verp, auto_reply(seeded), sender=seeded.recipient)
    await intake.drain()
    d = await delivery(env, seeded.delivery_id)
    assert d.state == "delivered" and d.reason is None
    assert len(await events(env, seeded.delivery_id)) == len(before)
    (row,) = await bounce_rows(env)
    assert (row.status, row.kind, row.delivery_id) == ("ignored", "auto-reply", seeded.delivery_id)
    assert await suppressions(env) == []


async def test_complaint_to_the_feedback_address_suppresses(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "angry@client.example")
    await send(intake.port, FEEDBACK, build_arf(seeded), sender="fbl@fbl.client.example")
    await send(intake.port, FEEDBACK, build_arf(seeded), sender="fbl@fbl.client.example")
    await intake.drain()
    d = await delivery(env, seeded.delivery_id)
    assert d.state == "delivered"  # a complaint is not a failure to deliver
    complaints = [e for e in await events(env, seeded.delivery_id) if e.type == "complaint"]
    assert len(complaints) == 1
    assert [(x.address, x.reason) for x in await suppressions(env)] == [
        ("angry@client.example", "complaint")
    ]
    assert sorted(r.status for r in await bounce_rows(env)) == ["ignored", "processed"]


async def test_valid_token_of_a_vanished_delivery_is_unmatched(env, intake):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "x@client.example")
    from postway.mta.verp import make_return_path

    ghost = make_return_path(
        "0" * 32, env.rt.settings.resolved_secret_key(), "bounces.postway.test"
    )
    seeded.verp = ghost
    await send(intake.port, ghost, build_dsn(seeded))
    await intake.drain()
    (row,) = await bounce_rows(env)
    assert row.status == "unmatched" and "0" * 32 in (row.error or "")
    async with env.rt.db.session() as s:
        changed = await s.scalar(
            select(func.count()).select_from(DeliveryEvent).where(DeliveryEvent.type == "bounced")
        )
    assert changed == 0
    assert (await delivery(env, seeded.delivery_id)).state == "delivered"
