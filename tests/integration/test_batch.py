"""POST /messages/batch: many messages in one request, all accepted or none."""

from __future__ import annotations

from test_bad_input import counts


async def sender(env, smtp_server):
    srv = await smtp_server()
    acct, identity_id = await env.relay_sender(srv.port, "ada@acme.example", admin=False)
    return acct, identity_id, srv


async def test_batch_accepted_and_delivered(env, smtp_server):
    acct, iid, srv = await sender(env, smtp_server)
    batch = [
        {
            "identity_id": iid,
            "to": [f"lead{i}@client.example"],
            "subject": f"Step {i}",
            "text": "hi",
        }
        for i in range(3)
    ]
    r = await acct.client.post("/api/v1/messages/batch", json={"messages": batch})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert [a["deliveries"][0]["recipient"] for a in accepted] == [
        "lead0@client.example",
        "lead1@client.example",
        "lead2@client.example",
    ]
    await env.drain()
    assert sorted(t.rcpt_tos[0] for t in srv.received) == [
        "lead0@client.example",
        "lead1@client.example",
        "lead2@client.example",
    ]
    for a in accepted:
        m = (await acct.client.get(f"/api/v1/messages/{a['id']}")).json()
        assert m["deliveries"][0]["state"] == "sent"


async def test_bad_message_in_batch_stores_nothing(env, smtp_server):
    acct, iid, _ = await sender(env, smtp_server)
    before = await counts(env)
    batch = [
        {"identity_id": iid, "to": ["ok@client.example"], "text": "fine"},
        {"identity_id": iid, "to": ["not-an-address"], "text": "bad"},
    ]
    r = await acct.client.post("/api/v1/messages/batch", json={"messages": batch})
    assert r.status_code == 400
    assert r.json()["error"].startswith("messages[1].to[0]")
    r = await acct.client.post(
        "/api/v1/messages/batch",
        json={"messages": [{"identity_id": "0" * 32, "to": ["a@client.example"], "text": "x"}]},
    )
    assert r.status_code == 404 and r.json()["error"].startswith("messages[0]:")
    r = await acct.client.post("/api/v1/messages/batch", json={"messages": []})
    assert r.status_code == 400
    assert await counts(env) == before
