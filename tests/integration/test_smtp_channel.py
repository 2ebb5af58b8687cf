"""Sending through a custom SMTP relay: a real aiosmtpd relay on loopback that requires
STARTTLS and AUTH and answers per recipient as each test scripts it."""

from __future__ import annotations

import base64
import email
from email import policy
from typing import Any

import pytest
from sqlalchemy import select

from peers.smtp import DISCONNECT, ScriptedSMTPServer
from peers.tls import TLSPeer
from postway.store.models import ChannelSetting

USERS = {"rep@acme.example": "relay-pass-123"}


async def relay(smtp_server: Any, tls_peer: TLSPeer, **script: Any) -> ScriptedSMTPServer:
    return await smtp_server(
        tls_context=tls_peer.server_context(),
        require_starttls=True,
        users=USERS,
        require_auth=True,
        **script,
    )


async def setup_sender(acct: Any, srv: ScriptedSMTPServer, password: str = "relay-pass-123") -> str:
    r = await acct.client.post(
        "/api/v1/identities",
        json={"name": "Ada Rep", "email": "ada@acme.example", "signature": "-- Ada"},
    )
    assert r.status_code == 201, r.text
    identity_id = r.json()["id"]
    r = await acct.client.put(
        "/api/v1/delivery-channel",
        json={
            "channel": "smtp",
            "smtp": {
                "host": "localhost",
                "port": srv.port,
                "security": "starttls",
                "username": "rep@acme.example",
                "password": password,
            },
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["channel"] == "smtp" and body["smtp"]["password_set"] is True
    assert "password" not in body["smtp"] and password not in r.text
    return identity_id


async def test_send_through_relay_records_per_recipient_outcomes(env, smtp_server, tls_peer):
    srv = await relay(
        smtp_server,
        tls_peer,
        rcpt_replies={
            "gone@client.example": "550 5.1.1 <gone@client.example>: Recipient address rejected",
            "later@client.example": "450 4.2.1 Mailbox busy, try later",
        },
    )
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    pdf = b"%PDF-1.4 fake but binary \x00\xff\x10"
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["bob@client.example", "gone@client.example"],
            "cc": ["later@client.example"],
            "bcc": ["boss@acme.example"],
            "subject": "Quote for Q4 — Ünïcode",
            "text": "Hello Bob,\nthe quote is attached.",
            "html": "<p>Hello Bob,<br>the quote is attached.</p>",
            "attachments": [
                {
                    "filename": "quote.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(pdf).decode(),
                }
            ],
        },
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert [d["state"] for d in accepted["deliveries"]] == ["queued"] * 4
    await env.drain()

    r = await acct.client.get(f"/api/v1/messages/{accepted['id']}")
    assert r.status_code == 200
    states = {d["recipient"]: d for d in r.json()["deliveries"]}
    assert states["bob@client.example"]["state"] == "sent"
    assert states["boss@acme.example"]["state"] == "sent"
    gone = states["gone@client.example"]
    assert gone["state"] == "failed"
    assert gone["status"] == "5.1.1" and gone["reason"] == "userunknown"
    assert "Recipient address rejected" in gone["diagnostic"]
    later = states["later@client.example"]
    assert later["state"] in ("deferred", "failed")  # 450 keeps being retried until expiry
    assert any(e["type"] == "deferred" for e in later["events"])
    assert [e["type"] for e in states["bob@client.example"]["events"]] == ["queued", "sent"]

    # What the relay received: one transaction, over TLS, authenticated, as the identity.
    assert len(srv.received) == 1
    got = srv.received[0]
    assert got.tls and got.auth_user == "rep@acme.example"
    assert got.mail_from == "ada@acme.example"
    assert sorted(got.rcpt_tos) == ["bob@client.example", "boss@acme.example"]
    msg = email.message_from_bytes(got.data, policy=policy.default)
    assert msg["From"].addresses[0].addr_spec == "ada@acme.example"
    assert msg["From"].addresses[0].display_name == "Ada Rep"
    assert msg["Subject"] == "Quote for Q4 — Ünïcode"
    assert "Bcc" not in msg and "boss@acme.example" not in got.data.decode("ascii", "replace")
    assert msg["Message-ID"] == f"<{accepted['message_id_header'].strip('<>')}>"
    body = msg.get_body(("plain",))
    assert body is not None and "the quote is attached." in body.get_content()
    assert "-- Ada" in body.get_content()
    html = msg.get_body(("html",))
    assert html is not None and "<p>Hello Bob" in html.get_content()
    atts = list(msg.iter_attachments())
    assert len(atts) == 1 and atts[0].get_filename() == "quote.pdf"
    assert atts[0].get_content() == pdf


async def test_deferred_then_sent_on_retry(env, smtp_server, tls_peer):
    srv = await relay(
        smtp_server, tls_peer, rcpt_replies={"bob@client.example": "451 4.7.1 Greylisted"}
    )
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["bob@client.example"],
            "subject": "Hi",
            "text": "x",
        },
    )
    message_id = r.json()["id"]
    await env.rt.worker.run_once()
    d = (await acct.client.get(f"/api/v1/messages/{message_id}")).json()["deliveries"][0]
    assert d["state"] == "deferred" and d["reply_code"] == 451
    assert d["next_attempt_at"] is not None
    srv.rcpt_replies.clear()  # the greylisting passes
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{message_id}")).json()["deliveries"][0]
    assert d["state"] == "sent" and d["attempts"] >= 2
    assert [e["type"] for e in d["events"]][-2:] == ["deferred", "sent"]


async def test_disconnect_mid_data_defers(env, smtp_server, tls_peer):
    srv = await relay(smtp_server, tls_peer, disconnect_at="data")
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["bob@client.example"],
            "text": "x",
            "subject": "s",
        },
    )
    await env.rt.worker.run_once()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "deferred" and d["reason"] == "networkerror"
    assert srv.received == []
    srv.disconnect_at = None
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "sent"
    assert len(srv.received) == 1


async def test_data_rejected_fails_all_accepted(env, smtp_server, tls_peer):
    srv = await relay(
        smtp_server, tls_peer, data_reply="554 5.7.1 Message content rejected as spam"
    )
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["a@client.example", "b@client.example"],
            "text": "x",
        },
    )
    await env.drain()
    ds = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"]
    assert {d["state"] for d in ds} == {"failed"}
    assert all(d["reply_code"] == 554 and "spam" in d["diagnostic"] for d in ds)
    failed = (await acct.client.get("/api/v1/failed-deliveries")).json()
    assert failed["total"] == 2
    assert {i["recipient"] for i in failed["items"]} == {"a@client.example", "b@client.example"}


async def test_rejected_credentials_flag_channel_and_keep_mail(env, smtp_server, tls_peer):
    srv = await relay(smtp_server, tls_peer)
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv, password="wrong-password")
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["bob@client.example"], "text": "x"},
    )
    await env.rt.worker.run_once()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "deferred" and d["reason"] == "authfailure"
    channel = (await acct.client.get("/api/v1/delivery-channel")).json()
    assert channel["attention"] and "rejected the username or password" in channel["attention"]
    assert "wrong-password" not in str(channel)
    # the user fixes the password: the queued mail goes out on the next try
    r2 = await acct.client.put(
        "/api/v1/delivery-channel",
        json={
            "channel": "smtp",
            "smtp": {
                "host": "localhost",
                "port": srv.port,
                "username": "rep@acme.example",
                "password": "relay-pass-123",
            },
        },
    )
    assert r2.json()["attention"] is None
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "sent"


async def test_relay_password_encrypted_at_rest(env, smtp_server, tls_peer):
    srv = await relay(smtp_server, tls_peer)
    acct = await env.account("ada@acme.example")
    await setup_sender(acct, srv)
    async with env.rt.db.session() as s:
        row = await s.scalar(select(ChannelSetting))
    assert row is not None and row.smtp_password_enc
    assert "relay-pass-123" not in row.smtp_password_enc
    assert env.rt.box.decrypt(row.smtp_password_enc) == "relay-pass-123"


@pytest.mark.parametrize("drop", [DISCONNECT])
async def test_disconnect_at_rcpt_defers(env, smtp_server, tls_peer, drop):
    srv = await relay(smtp_server, tls_peer, rcpt_replies={"bob@client.example": drop})
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["bob@client.example"], "text": "x"},
    )
    await env.rt.worker.run_once()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "deferred"
