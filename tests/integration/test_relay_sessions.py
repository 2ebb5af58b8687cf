"""The custom SMTP relay keeps its sessions across messages: one connect, STARTTLS and AUTH
for many messages; a session the relay broke is replaced without losing or doubling mail."""

from __future__ import annotations

from typing import Any

from test_smtp_channel import relay, setup_sender

from peers.smtp import DISCONNECT, Received


async def send(acct: Any, identity_id: str, to: str) -> str:
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": identity_id, "to": [to], "text": "x"}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def states(acct: Any, ids: list[str]) -> list[str]:
    out = []
    for i in ids:
        d = (await acct.client.get(f"/api/v1/messages/{i}")).json()["deliveries"][0]
        out.append(d["state"])
    return out


async def test_one_session_and_one_auth_for_several_messages(env, smtp_server, tls_peer):
    srv = await relay(smtp_server, tls_peer)
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    ids = []
    for i in range(4):  # one message per worker round: reused across batches
        ids.append(await send(acct, identity_id, f"bob{i}@client.example"))
        assert await env.rt.worker.run_once() == 1
    assert await states(acct, ids) == ["sent"] * 4
    assert len(srv.received) == 4
    verbs = srv.verbs()
    assert verbs.count("AUTH") == 1 and verbs.count("STARTTLS") == 1
    assert srv.sessions_opened == 1
    assert all(t.tls and t.auth_user == "rep@acme.example" for t in srv.received)


async def test_session_broken_between_messages_is_replaced(env, smtp_server, tls_peer):
    def mail_reply(session_id: int) -> str:
        # Set after the first message: the relay drops session 1 at its next MAIL (as after
        # an idle timeout), and serves new sessions.
        return DISCONNECT if session_id == 1 else "250 2.1.0 OK"

    srv = await relay(smtp_server, tls_peer)
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    first = await send(acct, identity_id, "a@client.example")
    assert await env.rt.worker.run_once() == 1
    srv.mail_reply = mail_reply
    second = await send(acct, identity_id, "b@client.example")
    assert await env.rt.worker.run_once() == 1  # one attempt: no retry by the queue
    assert await states(acct, [first, second]) == ["sent", "sent"]
    assert [(t.rcpt_tos, t.session_id) for t in srv.transactions] == [
        (["a@client.example"], 1),
        (["b@client.example"], 2),
    ]
    # b was first tried on the kept session (its MAIL went unanswered), then on a new one
    assert [c.verb for c in srv.commands_of(1)].count("MAIL") == 2
    assert srv.verbs().count("AUTH") == 2


async def test_no_resend_after_the_final_dot(env, smtp_server, tls_peer):
    def data_reply(rec: Received) -> str:
        return DISCONNECT if rec.rcpt_tos == ["b@client.example"] else "250 2.0.0 OK"

    srv = await relay(smtp_server, tls_peer, data_reply=data_reply)
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    first = await send(acct, identity_id, "a@client.example")
    assert await env.rt.worker.run_once() == 1
    second = await send(acct, identity_id, "b@client.example")
    assert await env.rt.worker.run_once() == 1
    # The content arrived once; no answer came, so it waits for the queue's retry.
    assert await states(acct, [first, second]) == ["sent", "deferred"]
    assert [(t.rcpt_tos, t.session_id) for t in srv.transactions] == [
        (["a@client.example"], 1),
        (["b@client.example"], 1),
    ]


async def test_sessions_per_relay_within_the_limit(env, smtp_server, tls_peer):
    srv = await relay(smtp_server, tls_peer)
    acct = await env.account("ada@acme.example")
    identity_id = await setup_sender(acct, srv)
    ids = [await send(acct, identity_id, f"c{i}@client.example") for i in range(12)]
    assert await env.rt.worker.run_once() == 12  # one batch, messages sent concurrently
    assert await states(acct, ids) == ["sent"] * 12
    limit = env.rt.settings.relay_max_connections
    assert srv.peak_sessions <= limit and srv.sessions_opened <= limit
    assert srv.verbs().count("AUTH") == srv.sessions_opened
