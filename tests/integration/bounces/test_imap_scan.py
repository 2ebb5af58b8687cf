"""Bounces of custom SMTP senders read from their IMAP mailbox: a real Dovecot on loopback
holding real bounce emails from the corpus, re-addressed to the messages the user sent."""

from __future__ import annotations

import imaplib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from peers.imap import DovecotPeer, dovecot_available
from peers.tls import TLSPeer
from postway.bounces.imap_scan import scan_mailbox
from postway.bounces.mailbox_match import MailboxOwner
from postway.store import channel_settings as cs
from postway.store.bounce_mailbox import mailbox_of
from postway.store.models import ChannelSetting, Delivery, DeliveryEvent, User

pytestmark = pytest.mark.skipif(
    not dovecot_available(), reason="Dovecot missing: apt-get install -y dovecot-imapd"
)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"
EXPECTED = {
    (e := json.loads(line))["file"]: e
    for line in (CORPUS / "expected.jsonl").read_text().splitlines()
    if line.strip()
}
BOX_USER, BOX_PASSWORD = "alice-bounces", "imap-pass-123"
_MESSAGE_ID = re.compile(rb"^(Message-I[dD]:[ \t]*)<[^<>\r\n]+>", re.IGNORECASE | re.MULTILINE)


@pytest.fixture
def dovecot(tls_peer: TLSPeer) -> Iterator[DovecotPeer]:
    with DovecotPeer({BOX_USER: BOX_PASSWORD}, tls=tls_peer) as peer:
        yield peer


def readdressed(name: str, message_id: str, recipient: str) -> bytes:
    """A corpus bounce about our message: the returned message's Message-ID (the last one in
    the file) and the failed recipient replaced by ours."""
    raw = (CORPUS / name).read_bytes()
    old = EXPECTED[name]["recipient"].encode()
    raw = re.sub(re.escape(old), recipient.encode(), raw, flags=re.IGNORECASE)
    last = list(_MESSAGE_ID.finditer(raw))[-1]
    return raw[: last.start()] + last.group(1) + message_id.encode() + raw[last.end() :]


def ordinary_reply(message_id: str) -> bytes:
    return (
        "From: Bob <bob@client.example>\r\nTo: alice@acme.example\r\n"
        "Subject: Re: the quote\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
        f"Message-ID: <reply-1@client.example>\r\nIn-Reply-To: {message_id}\r\n"
        f"References: {message_id}\r\n\r\nThanks, the quote looks good. Call me?\r\n"
    ).encode()


NEWSLETTER = (
    b"From: news@vendor.example\r\nTo: alice@acme.example\r\nSubject: Our December news\r\n"
    b"Message-ID: <news-7@vendor.example>\r\n\r\nNothing about deliveries here.\r\n"
)


async def send(acct: Any, identity: str, to: list[str]) -> dict[str, Any]:
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity, "to": to, "subject": "the quote", "text": "Hello"},
    )
    assert r.status_code == 202, r.text
    return r.json()


async def states(env: Any, ids: list[str]) -> dict[str, tuple[str, str | None, bool | None]]:
    async with env.rt.db.reader() as s:
        rows = await s.scalars(select(Delivery).where(Delivery.id.in_(ids)))
        return {d.id: (d.state, d.reason, d.hard) for d in rows}


def imap_flags(peer: DovecotPeer, tls_peer: TLSPeer) -> list[bytes]:
    c = imaplib.IMAP4_SSL("localhost", peer.tls_port, ssl_context=tls_peer.client_context())
    try:
        c.login(BOX_USER, BOX_PASSWORD)
        c.select("INBOX", readonly=True)
        _, data = c.uid("FETCH", "1:*", "(FLAGS)")
        return [d for d in data if isinstance(d, bytes)]
    finally:
        c.logout()


async def test_scan_marks_exactly_the_reported_deliveries(env, smtp_server, dovecot, tls_peer):
    srv = await smtp_server()
    alice, alice_identity = await env.relay_sender(srv.port, "alice@acme.example")
    mallory, mallory_identity = await env.relay_sender(srv.port, "mallory@acme.example")
    first = await send(alice, alice_identity, ["bob@client.example", "carol@client.example"])
    second = await send(alice, alice_identity, ["dave@client.example"])
    foreign = await send(mallory, mallory_identity, ["erin@client.example"])
    await env.drain()
    ids = {
        (m["message_id_header"], d["recipient"]): d["id"]
        for m in (first, second, foreign)
        for d in m["deliveries"]
    }
    every = list(ids.values())
    assert {s for s, _, _ in (await states(env, every)).values()} == {"sent"}

    r = await alice.client.put(
        "/api/v1/delivery-channel/smtp/bounce-mailbox",
        json={"host": "localhost", "port": dovecot.tls_port, "security": "tls",
              "username": BOX_USER, "password": BOX_PASSWORD},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["password_set"] is True and BOX_PASSWORD not in r.text

    a, b, m = first["message_id_header"], second["message_id_header"], foreign["message_id_header"]
    bob, dave = ids[(a, "bob@client.example")], ids[(b, "dave@client.example")]
    mail = [
        readdressed("lhost-postfix-14.eml", a, "bob@client.example"),  # Postfix
        readdressed("lhost-exim-46.eml", b, "dave@client.example"),  # Exim
        # Gmail's report about Alice's message, for an address it was never sent to
        readdressed("lhost-gmail-16.eml", a, "nobody@client.example"),
        # a report naming Mallory's message, in Alice's mailbox
        readdressed("rhost-apple-04.eml", m, "erin@client.example"),
        ordinary_reply(a),
        NEWSLETTER,
    ]
    for raw in mail:
        dovecot.deliver(BOX_USER, raw)
    before = dovecot.snapshot(BOX_USER)
    assert len(before) == len(mail) and all(k.startswith("new/") for k in before)

    async with env.rt.db.reader() as s:
        user = await s.scalar(select(User).where(User.email == "alice@acme.example"))
        row = await cs.setting_row(s, user.org_id, user.id)
    owner = MailboxOwner(user.org_id, user.id, ("smtp",))
    mailbox = mailbox_of(row, env.rt.box)
    assert mailbox is not None

    report = await scan_mailbox(env.rt.db, env.rt.settings, owner, mailbox)
    assert sorted(report.bounced) == sorted([bob, dave])
    after = await states(env, every)
    expected_bob = EXPECTED["lhost-postfix-14.eml"]
    expected_dave = EXPECTED["lhost-exim-46.eml"]
    assert after[bob] == ("bounced", expected_bob["reason"], expected_bob["hardbounce"])
    assert after[dave] == ("bounced", expected_dave["reason"], expected_dave["hardbounce"])
    untouched = [d for d in every if d not in (bob, dave)]
    assert all(after[d] == ("sent", None, None) for d in untouched), after
    async with env.rt.db.reader() as s:
        events = list(await s.scalars(select(DeliveryEvent).where(DeliveryEvent.type == "bounced")))
    assert sorted(e.delivery_id for e in events) == sorted([bob, dave])
    assert all(e.detail["source"] == "mailbox" for e in events)

    # The mailbox is exactly as it was: same files, still in new/, no flags added.
    assert dovecot.snapshot(BOX_USER) == before
    assert all(b"\\Seen" not in line for line in imap_flags(dovecot, tls_peer))

    # A second scan fetches nothing and changes nothing.
    again = await scan_mailbox(env.rt.db, env.rt.settings, owner, mailbox)
    assert again.found == report.found and again.fetched == 0 and again.results == []
    assert await states(env, every) == after
    assert dovecot.snapshot(BOX_USER) == before


async def test_wrong_password_is_a_clear_error_in_the_test_endpoint(
    env, smtp_server, dovecot
):
    srv = await smtp_server()
    alice, _ = await env.relay_sender(srv.port, "alice@acme.example")
    base = {"host": "localhost", "port": dovecot.tls_port, "security": "tls",
            "username": BOX_USER}  # fmt: skip
    r = await alice.client.post(
        "/api/v1/delivery-channel/smtp/bounce-mailbox/test",
        json={**base, "password": "not-the-password"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False and body["step"] == "auth"
    assert "rejected the username or password" in body["message"]
    assert "not-the-password" not in r.text

    r = await alice.client.post(
        "/api/v1/delivery-channel/smtp/bounce-mailbox/test",
        json={**base, "password": BOX_PASSWORD},
    )
    assert r.json() == {
        "ok": True, "step": "done",
        "message": "logged in to localhost and opened INBOX (read-only)",
    }  # fmt: skip
    async with env.rt.db.reader() as s:
        assert await s.scalar(select(ChannelSetting.imap_host)) is None  # a test stores nothing
