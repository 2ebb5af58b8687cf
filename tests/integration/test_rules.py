"""Organisation rules in the pipeline: throttling, blocked domains, suppressions."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from postway.store.models import Delivery, Suppression


async def sender(env, smtp_server, *, admin=True):
    srv = await smtp_server()
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=admin)
    return acct, identity_id, srv


async def test_batches_wait_between_them_and_nothing_is_lost(env, smtp_server):
    acct, identity_id, srv = await sender(env, smtp_server)
    r = await acct.client.put("/api/v1/throttle", json={"batch_size": 2, "wait_seconds": 0.6})
    assert r.status_code == 200, r.text
    r = await acct.client.put("/api/v1/throttle", json={"batch_size": 0})
    assert r.status_code == 400 and "batch_size" in r.json()["error"]
    await acct.client.put("/api/v1/throttle", json={"batch_size": 2, "wait_seconds": 0.6})
    to = [f"lead{i}@client.example" for i in range(5)]
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": identity_id, "to": to, "text": "hello"}
    )
    mid = r.json()["id"]
    await env.rt.worker.run_once()
    ds = (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]
    assert sorted(d["state"] for d in ds) == ["queued", "queued", "queued", "sent", "sent"]
    waiting = [d for d in ds if d["state"] == "queued"]
    assert all(d["events"][-1]["type"] == "throttled" and d["attempts"] == 0 for d in waiting)
    assert len(srv.received) == 1 and len(srv.received[0].rcpt_tos) == 2
    # during the pause nothing more goes out
    await env.rt.worker.run_once()
    assert sum(len(t.rcpt_tos) for t in srv.received) == 2
    for _ in range(60):
        await env.rt.worker.run_once()
        if sum(len(t.rcpt_tos) for t in srv.received) == 5:
            break
        await asyncio.sleep(0.1)
    got = [rcpt for t in srv.received for rcpt in t.rcpt_tos]
    assert sorted(got) == sorted(to)
    sizes = [len(t.rcpt_tos) for t in srv.received]
    assert max(sizes) <= 2 and len(sizes) == 3


async def test_blocked_domain_fails_with_reason_and_others_go(env, smtp_server):
    acct, identity_id, srv = await sender(env, smtp_server)
    await acct.client.put("/api/v1/blocked-domains", json={"domains": ["rival.example"]})
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["ceo@rival.example", "a@client.example", "x@eu.rival.example"],
            "text": "hi",
        },
    )
    await env.drain()
    ds = {
        d["recipient"]: d
        for d in (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"]
    }
    for addr in ("ceo@rival.example", "x@eu.rival.example"):
        assert ds[addr]["state"] == "failed" and ds[addr]["reason"] == "blocked-domain"
    assert ds["a@client.example"]["state"] == "sent"
    assert [t.rcpt_tos for t in srv.received] == [["a@client.example"]]
    failed = (await acct.client.get("/api/v1/failed-deliveries")).json()
    assert {i["reason"] for i in failed["items"]} == {"blocked-domain"}


async def test_blocked_domains_api_refuses_what_is_not_a_domain(env, smtp_server):
    acct, _, _ = await sender(env, smtp_server)
    ok = await acct.client.put("/api/v1/blocked-domains", json={"domains": ["@Rival.Example"]})
    assert ok.status_code == 200 and ok.json() == {"domains": ["rival.example"]}
    for bad in ("not a domain", "ex..com", "-x.example"):
        r = await acct.client.put("/api/v1/blocked-domains", json={"domains": ["a.example", bad]})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["field"] == "domains" and "domains[1]" in r.json()["error"]
    kept = await acct.client.get("/api/v1/blocked-domains")
    assert kept.json() == {"domains": ["rival.example"]}


async def test_suppressed_recipient_is_not_attempted_until_lifted(env, smtp_server):
    acct, identity_id, srv = await sender(env, smtp_server)
    async with env.rt.db.session() as s, s.begin():
        d = await s.scalar(select(Delivery).limit(1))
        assert d is None
        from postway.store.models import User

        user = await s.scalar(select(User))
        s.add(Suppression(org_id=user.org_id, address="gone@client.example", reason="userunknown"))
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["gone@client.example"], "text": "x"},
    )
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "suppressed" and srv.received == []
    sup = (await acct.client.get("/api/v1/suppressions")).json()
    assert [x["address"] for x in sup] == ["gone@client.example"]
    assert (await acct.client.delete("/api/v1/suppressions/gone@client.example")).status_code == 204
    assert (await acct.client.delete("/api/v1/suppressions/gone@client.example")).status_code == 404
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["gone@client.example"], "text": "x"},
    )
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "sent"
