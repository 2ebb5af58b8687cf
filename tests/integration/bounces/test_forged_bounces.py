"""Forged bounces over real SMTP: only a signed VERP token changes a delivery. Reports that name
a message by its Message-ID and recipient (which every copy of the mail shows) are recorded for
review and change nothing, within an organisation or across two."""

from __future__ import annotations

from dataclasses import replace

from bounce_support import (
    FEEDBACK,
    Seeded,
    build_arf,
    build_dsn,
    delivery,
    seed_delivered,
    send,
)
from sqlalchemy import select

from postway.bounces.apply import list_failures
from postway.store.models import BounceMessage, DeliveryEvent, Suppression
from postway.store.users import create_user


async def events(env, delivery_id: str) -> list[tuple[str, str]]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(
            select(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        )
        return [(e.type, e.state) for e in rows]


async def bounce_rows(env) -> list[BounceMessage]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(select(BounceMessage).order_by(BounceMessage.received_at))
        return list(rows)


async def suppressions(env) -> list[tuple[str, str, str]]:
    async with env.rt.db.session() as s:
        return [(x.org_id, x.address, x.reason) for x in await s.scalars(select(Suppression))]


async def org_of(env, delivery_id: str) -> str:
    return (await delivery(env, delivery_id)).org_id


def forged_mac(verp: str) -> str:
    """The victim's delivery id with a MAC the attacker made up (one letter off)."""
    local, _, domain = verp.partition("@")
    return f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"


async def assert_untouched(env, victim: Seeded, before: list[tuple[str, str]]) -> None:
    d = await delivery(env, victim.delivery_id)
    assert (d.state, d.reason, d.hard, d.status) == ("delivered", None, None, None)
    assert await events(env, victim.delivery_id) == before
    victim_org = await org_of(env, victim.delivery_id)
    assert [x for x in await suppressions(env) if x[0] == victim_org] == []


async def test_forged_reports_to_the_feedback_address_are_recorded_and_change_nothing(env, intake):
    rep = await env.account("rep@acme.example")
    victim = await seed_delivered(env, rep.email, "ceo@client.example")
    before = await events(env, victim.delivery_id)
    # The attacker knows the Message-ID and recipient, not the delivery's signed token.
    no_token = replace(victim, verp=FEEDBACK)
    bad_token = replace(victim, verp=forged_mac(victim.verp))
    attacker = "attacker@evil.example"
    await send(intake.port, FEEDBACK, build_dsn(no_token), sender=attacker)  # "user unknown"
    await send(intake.port, FEEDBACK, build_dsn(bad_token), sender=attacker)  # forged MAC
    await send(intake.port, FEEDBACK, build_arf(no_token), sender=attacker)  # "complaint"
    await intake.drain()

    await assert_untouched(env, victim, before)
    rows = await bounce_rows(env)
    assert [(r.status, r.delivery_id, r.org_id) for r in rows] == [("unmatched", None, None)] * 3
    assert [r.kind for r in rows] == ["bounce", "bounce", "feedback"]
    for r in rows:  # what the report claims is kept for whoever reviews it
        assert "no signed VERP token" in r.error
        assert victim.message_id in r.error and victim.recipient in r.error
    # and `postway bounce failures` lists them
    assert {r.id for r in await list_failures(env.rt.db)} == {r.id for r in rows}


async def test_another_organisation_cannot_bounce_or_suppress_a_victim(env, intake):
    rep = await env.account("rep@acme.example")
    victim = await seed_delivered(env, rep.email, "ceo@client.example")
    before = await events(env, victim.delivery_id)
    async with env.rt.db.session() as s, s.begin():
        mallory = await create_user(s, "mallory@evil.example", "correct horse battery",
                                    org_name="Evil Ltd")  # fmt: skip
    own = await seed_delivered(env, mallory.email, "mallory-inbox@evil.example")
    assert await org_of(env, own.delivery_id) != await org_of(env, victim.delivery_id)

    # Mallory holds a genuine token for her own delivery and writes a report about the victim:
    # to her own VERP address, to the feedback address with her token in the returned
    # headers, and to the feedback address with none.
    about_victim = replace(victim, verp=own.verp)
    await send(intake.port, own.verp, build_dsn(about_victim))
    await send(intake.port, FEEDBACK, build_arf(about_victim))
    await send(intake.port, FEEDBACK, build_dsn(replace(victim, verp=FEEDBACK)))
    await intake.drain()

    await assert_untouched(env, victim, before)
    # Her token named her own delivery, so that is the only one that changed.
    assert (await delivery(env, own.delivery_id)).state == "bounced"
    assert await suppressions(env) == [
        (await org_of(env, own.delivery_id), own.recipient, "userunknown")
    ]
    rows = await bounce_rows(env)
    assert [(r.status, r.delivery_id) for r in rows] == [
        ("processed", own.delivery_id),
        ("processed", own.delivery_id),  # the complaint, about her own delivery
        ("unmatched", None),
    ]
    assert [e for e, _ in await events(env, own.delivery_id)][-2:] == ["bounced", "complaint"]
