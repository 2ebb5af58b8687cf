"""Sending through a connected Gmail account, end to end with real workers and the stand-in."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gmail_support import (
    account_row,
    connect,
    deliveries,
    gmail_sender,
    header,
    send,
    sent_raws,
    stored_raw,
)
from sqlalchemy import select, update

from peers.google import ACCOUNT
from postway.google_standin import Fault
from postway.runtime import Runtime
from postway.store.models import ConnectedAccount, Suppression, User, utcnow


async def _events(acct, message_id: str) -> list[dict]:
    return (await acct.client.get(f"/api/v1/messages/{message_id}/events")).json()


async def test_send_is_sent_with_gmail_ids_and_exactly_the_composed_bytes(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    mid = await send(acct, identity, to=["lead@client.example"], subject="Hello there")
    await genv.drain()
    [d] = await deliveries(genv, mid)
    assert d.state == "sent" and d.attempts == 1
    sent = [e for e in await _events(acct, mid) if e["type"] == "sent"][0]
    assert sent["detail"]["thread_id"] == google.state.sent[0].thread_id
    assert sent["detail"]["gmail_id"] == google.state.sent[0].id
    # the stand-in got exactly the stored message, with a valid bearer token of this grant
    assert sent_raws(google) == [await stored_raw(genv, mid)]
    req = google.state.requests_to("/messages/send")[0]
    row = await account_row(genv)
    assert row is not None and req.bearer == genv.rt.box.decrypt(row.access_token_enc)
    assert google.state.received_by("lead@client.example")


async def test_to_cc_bcc_with_one_suppressed_each_gets_mail_once_and_no_bcc_is_seen(
    genv, google
):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    async with genv.rt.db.session() as s, s.begin():
        org_id = await s.scalar(select(User.org_id).where(User.email == acct.email))
        s.add(Suppression(org_id=org_id, address="gone@client.example", reason="hard bounce"))
    mid = await send(
        acct,
        identity,
        to=["ann@client.example"],
        cc=["bob@client.example", "gone@client.example"],
        bcc=["cat@client.example", "dan@client.example"],
    )
    await genv.drain()
    states = {d.recipient: d.state for d in await deliveries(genv, mid)}
    assert states == {
        "ann@client.example": "sent",
        "bob@client.example": "sent",
        "gone@client.example": "suppressed",
        "cat@client.example": "sent",
        "dan@client.example": "sent",
    }
    for address in ("ann", "bob", "cat", "dan"):
        assert len(google.state.received_by(f"{address}@client.example")) == 1, address
    assert google.state.received_by("gone@client.example") == []
    visible = google.state.received_by("ann@client.example")[0]
    assert b"cat@" not in visible and b"dan@" not in visible and b"gone@" not in visible
    assert "bob@client.example" in header(visible, "Cc")
    for bcc in ("cat", "dan"):
        copy = google.state.received_by(f"{bcc}@client.example")[0]
        assert header(copy, "Bcc") == "" and header(copy, "To") == ""
        other = "dan" if bcc == "cat" else "cat"
        assert f"{other}@".encode() not in copy
    assert b"Bcc:" not in b"".join(m.raw for m in google.state.sent)


async def test_send_as_alias_keeps_the_identity_address_and_others_show_the_account(
    genv, google
):
    acct, alias_identity = await gmail_sender(genv, "ada@acme.example", "sales@acme.example")
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
    )
    other_identity = r.json()["id"]
    alias_view = (await acct.client.get(f"/api/v1/identities/{alias_identity}")).json()
    other_view = (await acct.client.get(f"/api/v1/identities/{other_identity}")).json()
    assert alias_view["effective_from"] == {
        "managed": "sales@acme.example",
        "gmail": "sales@acme.example",
        "smtp": "sales@acme.example",
    }
    assert other_view["effective_from"]["gmail"] == ACCOUNT
    assert other_view["effective_from"]["managed"] == "ada@acme.example"

    m1 = await send(acct, alias_identity, to=["lead@client.example"])
    m2 = await send(acct, other_identity, to=["lead@client.example"])
    await genv.drain()
    first, second = sent_raws(google)
    assert header(first, "From") == "Rep <sales@acme.example>"
    assert header(second, "From") == f"Ada <{ACCOUNT}>"
    # what is stored is what was sent, and what recipients got
    assert [first, second] == [await stored_raw(genv, m1), await stored_raw(genv, m2)]
    assert [m.raw for m in google.state.sent] == [first, second]


async def test_rate_limit_defers_honouring_retry_after_and_5xx_defers(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.fail_next("send", Fault.RATE_LIMIT, retry_after="1")
    google.state.fail_next("send", Fault.SERVER_ERROR)
    mid = await send(acct, identity, to=["lead@client.example"])
    await genv.rt.worker.run_once()
    [d] = await deliveries(genv, mid)
    assert d.state == "deferred" and d.reason == "speeding"
    assert d.due_at is not None and d.due_at - d.updated_at >= timedelta(seconds=0.9)
    await asyncio.sleep(1.1)
    await genv.drain()
    [d] = await deliveries(genv, mid)
    assert d.state == "sent" and d.attempts == 3
    types = [e["type"] for e in await _events(acct, mid)]
    assert types == ["queued", "deferred", "deferred", "sent"]


async def test_invalid_recipient_fails_with_googles_words(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.fail_next("send", Fault.INVALID_RECIPIENT)
    mid = await send(acct, identity, to=["lead@client.example"])
    await genv.drain()
    [d] = await deliveries(genv, mid)
    assert d.state == "failed" and "Invalid To header" in (d.diagnostic or "")


async def test_revoked_grant_needs_reconnect_parks_mail_and_reconnecting_sends_it_in_order(
    genv, google
):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.revoke_grants(ACCOUNT)
    ids = [await send(acct, identity, to=["lead@x.example"], subject=f"n{i}") for i in range(3)]
    await genv.drain()
    for mid in ids:
        [d] = await deliveries(genv, mid)
        assert (d.state, d.reason, d.attempts) == ("deferred", "channel-disconnected", 0)
        assert "Reconnect" in (d.diagnostic or "") or "connect" in (d.diagnostic or "")
    view = (await acct.client.get("/api/v1/delivery-channel")).json()["gmail"]
    assert view["status"] == "needs_reconnect" and "Google" in view["reason"]
    assert google.state.sent == []

    r = await connect(acct, genv)  # the same account: a reconnect, no confirmation needed
    assert r.status_code == 303
    await genv.drain()
    # the first try was refused (401); after the reconnect each goes once, oldest first
    assert [header(m.raw, "Subject") for m in google.state.sent] == ["n0", "n1", "n2"]
    for mid in ids:
        [d] = await deliveries(genv, mid)
        assert d.state == "sent"
    assert (await acct.client.get("/api/v1/delivery-channel")).json()["gmail"]["status"] == (
        "connected"
    )


async def test_daily_quota_pauses_the_account_then_mail_resumes_in_order(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.fail_next("send", Fault.DAILY_LIMIT, retry_after="2")
    first = await send(acct, identity, to=["lead@client.example"], subject="first")
    await genv.rt.worker.run_once()
    second = await send(acct, identity, to=["lead@client.example"], subject="second")
    await genv.rt.worker.run_once()
    for mid in (first, second):
        [d] = await deliveries(genv, mid)
        assert (d.state, d.reason, d.attempts) == ("deferred", "channel-paused", 0)
    view = (await acct.client.get("/api/v1/delivery-channel")).json()["gmail"]
    assert view["status"] == "paused" and "quota" in view["reason"]
    assert view["paused_until"] is not None
    row = await account_row(genv)
    assert row is not None and row.paused_until is not None
    await asyncio.sleep(max((row.paused_until - utcnow()).total_seconds(), 0) + 0.2)
    await genv.drain()
    assert [header(m.raw, "Subject") for m in google.state.sent] == ["first", "second"]
    assert (await acct.client.get("/api/v1/delivery-channel")).json()["gmail"]["status"] == (
        "connected"
    )
    for mid in (first, second):
        [d] = await deliveries(genv, mid)
        assert d.state == "sent"


async def test_mail_parked_past_its_lifetime_fails_saying_what_to_do(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.revoke_grants(ACCOUNT)
    mid = await send(acct, identity, to=["lead@client.example"])
    await genv.drain()
    [d] = await deliveries(genv, mid)
    assert d.reason == "channel-disconnected" and d.due_at == d.expires_at
    async with genv.rt.db.session() as s, s.begin():  # its lifetime passes
        past = utcnow() - timedelta(seconds=1)
        await s.execute(
            update(type(d)).where(type(d).id == d.id).values(expires_at=past, due_at=past)
        )
    await genv.drain()
    [d] = await deliveries(genv, mid)
    assert (d.state, d.reason) == ("failed", "channel-disconnected")
    assert "Connect your Gmail account again" in (d.diagnostic or "")


async def test_two_workers_refresh_an_expired_token_once(genv, google, tmp_path):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.expire_access_tokens(ACCOUNT)
    async with genv.rt.db.session() as s, s.begin():
        await s.execute(update(ConnectedAccount).values(token_expires_at=utcnow()))
    before = len(google.state.requests_to("/token"))
    other = Runtime(genv.rt.settings)  # a second worker process's runtime, same database
    await other.start()
    row = await account_row(genv)
    assert row is not None
    try:
        tokens = await asyncio.gather(
            *(rt.accounts.fresh_token(row.id) for rt in (genv.rt, other, genv.rt, other))
        )
    finally:
        await other.aclose()
    refreshes = [
        r for r in google.state.requests_to("/token")[before:]
        if r.form().get("grant_type") == "refresh_token"
    ]  # fmt: skip
    assert len(refreshes) == 1
    assert len(set(tokens)) == 1
    mid = await send(acct, identity, to=["lead@client.example"])
    await genv.drain()
    assert google.state.requests_to("/messages/send")[-1].bearer == tokens[0]
    [d] = await deliveries(genv, mid)
    assert d.state == "sent"


async def test_a_message_over_gmails_25_mb_fails_naming_the_limit(genv, google):
    from postway.channels.base import OutboundMessage, Recipient
    from postway.channels.gmail import GmailChannel
    from postway.store.accounts import view_of

    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    mid = await send(acct, identity, to=["lead@client.example"])
    raw = await stored_raw(genv, mid)
    row = await account_row(genv)
    assert row is not None
    big = raw + (b"y" * 998 + b"\r\n") * 27_000  # 27 MB, over 25 MiB
    channel = GmailChannel(genv.rt.new_google_api(), genv.rt.accounts, view_of(row))
    try:
        [outcome] = await channel.deliver(
            OutboundMessage(
                mid, "org", "user", ACCOUNT, big, (Recipient("d1", "lead@client.example"),)
            )
        )
    finally:
        await channel.aclose()
    assert outcome.state.value == "failed" and outcome.reason == "mesgtoobig"
    assert "25 MB" in (outcome.diagnostic or "")
    assert google.state.requests_to("/messages/send") == []
