"""POST /delivery-channel/smtp/test names the step that failed, in words a user understands."""

from __future__ import annotations

from pathlib import Path

from peers.smtp import free_port
from peers.tls import TLSPeer

USERS = {"rep@acme.example": "relay-pass-123"}


async def check(acct, **smtp):
    r = await acct.client.post("/api/v1/delivery-channel/smtp/test", json=smtp)
    assert r.status_code == 200, r.text
    return r.json()


async def test_each_failure_kind_is_reported(env, smtp_server, tls_peer: TLSPeer, tmp_path: Path):
    acct = await env.account("ada@acme.example")
    good = await smtp_server(
        tls_context=tls_peer.server_context(), require_starttls=True, users=USERS, require_auth=True
    )
    stranger = TLSPeer.create(tmp_path / "untrusted")
    untrusted = await smtp_server(tls_context=stranger.server_context(), require_starttls=True)
    plain = await smtp_server()

    ok = await check(
        acct,
        host="localhost",
        port=good.port,
        username="rep@acme.example",
        password="relay-pass-123",
    )
    assert ok == {"ok": True, "step": "done", "message": ok["message"]}

    res = await check(acct, host="no-such-relay.invalid", port=587)
    assert (res["ok"], res["step"]) == (False, "resolve")
    assert "not found" in res["message"]

    res = await check(acct, host="127.0.0.1", port=free_port(), security="none")
    assert (res["ok"], res["step"]) == (False, "connect")
    assert "connection refused" in res["message"]

    res = await check(acct, host="localhost", port=untrusted.port)
    assert (res["ok"], res["step"]) == (False, "tls")
    assert "certificate" in res["message"] and "not valid" in res["message"]

    res = await check(acct, host="localhost", port=plain.port, security="starttls")
    assert (res["ok"], res["step"]) == (False, "tls")
    assert "does not offer STARTTLS" in res["message"]

    res = await check(
        acct, host="localhost", port=good.port, username="rep@acme.example", password="nope"
    )
    assert (res["ok"], res["step"]) == (False, "auth")
    assert "rejected the username or password" in res["message"] and "535" in res["message"]
    assert "nope" not in res["message"]


async def test_saved_relay_is_tested_without_resending_password(env, smtp_server, tls_peer):
    acct = await env.account("ada@acme.example")
    srv = await smtp_server(
        tls_context=tls_peer.server_context(), require_starttls=True, users=USERS, require_auth=True
    )
    smtp = {"host": "localhost", "port": srv.port, "username": "rep@acme.example"}
    r = await acct.client.put(
        "/api/v1/delivery-channel",
        json={"channel": "smtp", "smtp": {**smtp, "password": "relay-pass-123"}},
    )
    assert r.status_code == 200
    assert (await acct.client.post("/api/v1/delivery-channel/smtp/test")).json()["ok"] is True
    # same host, no password in the body: the stored one is used
    assert (await check(acct, **smtp))["ok"] is True
    # a PUT that omits the password keeps it
    r = await acct.client.put("/api/v1/delivery-channel", json={"channel": "smtp", "smtp": smtp})
    assert r.json()["smtp"]["password_set"] is True
    assert (await acct.client.post("/api/v1/delivery-channel/smtp/test")).json()["ok"] is True


async def test_implicit_tls_relay(env, smtp_server, tls_peer):
    acct = await env.account("ada@acme.example")
    srv = await smtp_server(
        tls_context=tls_peer.server_context(), implicit_tls=True, users=USERS, require_auth=True
    )
    res = await check(
        acct,
        host="localhost",
        port=srv.port,
        security="tls",
        username="rep@acme.example",
        password="relay-pass-123",
    )
    assert res["ok"] is True, res


# Issue 7, defect 5: the relay check refuses the same non-global ranges as the managed channel.
# Saving a relay only resolves its host (no connection), so every form can be tried there; the
# connection test dials, so it gets only forms that land on loopback, where a sink listens.
NON_GLOBAL_LITERALS = [
    ("[::127.0.0.1]", "IPv4-compatible"),
    ("[::ffff:0:127.0.0.1]", "IPv4-translated"),
    ("[64:ff9b::7f00:1]", "NAT64"),
    ("[2002:7f00:1::]", "6to4"),
    ("224.0.0.1", "multicast"),
    ("[fec0::1]", "site-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.169.254", "link-local"),
]
LOOPBACK_FORMS = ["127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "localhost"]  # noqa: S104


async def test_saving_a_relay_at_a_non_global_literal_is_refused(env):
    acct = await env.account("ada@acme.example")
    env.rt.settings.allow_private_relays = False
    for host, kind in NON_GLOBAL_LITERALS:
        r = await acct.client.put(
            "/api/v1/delivery-channel", json={"channel": "smtp", "smtp": {"host": host}}
        )
        assert r.status_code == 400, (host, r.text)
        error = r.json()["error"]
        assert "not a public internet address" in error and kind in error, (host, error)
    assert (await acct.client.get("/api/v1/delivery-channel")).json()["source"] == "default"


async def test_connection_test_never_dials_a_loopback_relay(env, smtp_server):
    acct = await env.account("ada@acme.example")
    sink = await smtp_server()  # on 127.0.0.1: every form below would reach it if dialled
    env.rt.settings.allow_private_relays = False
    for host in LOOPBACK_FORMS:
        res = await check(acct, host=host, port=sink.port, security="none")
        assert (res["ok"], res["step"]) == (False, "resolve"), (host, res)
        assert "not a public internet address" in res["message"]
        assert "POSTWAY_ALLOW_PRIVATE_RELAYS=1" in res["message"]
    assert sink.sessions_opened == 0 and sink.commands == []
    # Allowed by the operator, the same relay is dialled.
    env.rt.settings.allow_private_relays = True
    res = await check(acct, host="[::ffff:127.0.0.1]", port=sink.port, security="none")
    assert res["ok"] is True, res
    assert sink.sessions_opened == 1
