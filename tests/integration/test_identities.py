"""Identities: CRUD and verification by a confirmation link mailed through the managed channel."""

from __future__ import annotations

import email
import re
from email import policy


async def test_identity_crud(env):
    acct = await env.account("ada@acme.example")
    r = await acct.client.post(
        "/api/v1/identities",
        json={"name": "Ada", "email": "ada@acme.example", "reply_to": "team@acme.example"},
    )
    assert r.status_code == 201
    iid = r.json()["id"]
    r = await acct.client.patch(
        f"/api/v1/identities/{iid}",
        json={"name": "Ada L.", "signature": "-- Ada", "channel": "smtp"},
    )
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["signature"], r.json()["channel"]) == (
        "Ada L.",
        "-- Ada",
        "smtp",
    )
    r = await acct.client.patch(f"/api/v1/identities/{iid}", json={"email": "x@acme.example"})
    assert r.status_code == 400
    assert [i["id"] for i in (await acct.client.get("/api/v1/identities")).json()] == [iid]
    assert (await acct.client.delete(f"/api/v1/identities/{iid}")).status_code == 204
    assert (await acct.client.get(f"/api/v1/identities/{iid}")).status_code == 404
    assert (await acct.client.get("/api/v1/identities")).json() == []


async def test_confirmation_link_verifies_and_unlocks_managed_sending(env, smtp_server):
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account("ada@acme.example")
    iid = (
        await acct.client.post(
            "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
        )
    ).json()["id"]
    send = {"identity_id": iid, "to": ["lead@client.example"], "subject": "Hi", "text": "x"}
    r = await acct.client.post("/api/v1/messages", json=send)
    assert r.status_code == 409 and "not verified" in r.json()["error"]

    r = await acct.client.post(f"/api/v1/identities/{iid}/verify")
    assert r.status_code == 202
    await env.drain()
    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.rcpt_tos == ["ada@acme.example"]
    assert got.mail_from.startswith("b+") and got.mail_from.endswith("@bounces.postway.test")
    mail = email.message_from_bytes(got.data, policy=policy.default)
    assert "DKIM-Signature" in mail
    link = re.search(r"http://postway\.test/verify/(\S+)", mail.get_body(("plain",)).get_content())
    assert link, mail.get_body(("plain",)).get_content()
    # the system mail stays out of the user's conversations
    assert (await acct.client.get("/api/v1/conversations")).json()["total"] == 0

    r = await env.app_client.get(f"/verify/{link.group(1)}")
    assert r.status_code == 200 and "Address confirmed" in r.text
    r = await env.app_client.get(f"/verify/{link.group(1)}")
    assert r.status_code == 404  # single use
    assert (await acct.client.get(f"/api/v1/identities/{iid}")).json()["verified"] is True

    r = await acct.client.post("/api/v1/messages", json=send)
    assert r.status_code == 202
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "delivered" and d["channel"] == "managed"
    assert sink.received[-1].rcpt_tos == ["lead@client.example"]


async def test_identity_channel_overrides_user_default(env, smtp_server):
    relay = await smtp_server()
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account("ada@acme.example")
    await acct.client.put(
        "/api/v1/delivery-channel",
        json={
            "channel": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay.port, "security": "none"},
        },
    )
    via_relay = (
        await acct.client.post(
            "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
        )
    ).json()["id"]
    via_managed = (
        await acct.client.post(
            "/api/v1/identities",
            json={"name": "Ada", "email": "ada@news.acme.example", "channel": "managed"},
        )
    ).json()["id"]
    from test_cli import cli_env, run

    cenv = cli_env(
        env.rt.settings.data_dir.parent,
        env.rt.settings.database_url,
        POSTWAY_SECRET_KEY=env.rt.settings.secret_key,
    )
    assert (await run(cenv, "identity", "verify", "ada@news.acme.example")).returncode == 0
    for iid in (via_relay, via_managed):
        r = await acct.client.post(
            "/api/v1/messages", json={"identity_id": iid, "to": ["c@client.example"], "text": "x"}
        )
        assert r.status_code == 202, r.text
    await env.drain()
    assert [t.mail_from for t in relay.received] == ["ada@acme.example"]
    assert len(sink.received) == 1 and sink.received[0].mail_from.startswith("b+")


async def test_required_tls_setting_keeps_mail_off_plaintext_servers(env, smtp_server):
    sink = await smtp_server()  # offers no STARTTLS
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    env.rt.settings.mta_require_tls = True
    acct = await env.account("ada@acme.example")
    iid = (
        await acct.client.post(
            "/api/v1/identities", json={"name": "A", "email": "ada@acme.example"}
        )
    ).json()["id"]
    from postway.store.identities import mark_verified

    async with env.rt.db.session() as s, s.begin():
        await mark_verified(s, "ada@acme.example")
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": iid, "to": ["c@client.example"], "text": "x"}
    )
    await env.rt.worker.run_once()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "deferred" and "TLS" in (d["diagnostic"] or "")
    assert sink.received == []
