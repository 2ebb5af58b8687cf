"""Operating the queue: resend a failed recipient (API), and `postway queue ...` (CLI)."""

from __future__ import annotations

import json

from test_cli import cli_env, run


async def sender(env, smtp_server, **script):
    srv = await smtp_server(**script)
    acct, identity_id = await env.relay_sender(srv.port, "ops@acme.example")
    return acct, identity_id, srv


async def test_failed_recipient_can_be_resent(env, smtp_server):
    acct, iid, srv = await sender(
        env,
        smtp_server,
        rcpt_replies={"a@client.example": "550 5.4.5 Daily user sending quota exceeded"},
    )
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": iid, "to": ["a@client.example"], "text": "x"}
    )
    mid = r.json()["id"]
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"][0]
    assert d["state"] == "failed"
    srv.rcpt_replies.clear()
    r = await acct.client.post(f"/api/v1/deliveries/{d['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "queued"
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"][0]
    assert d["state"] == "sent"
    assert [e["type"] for e in d["events"]] == ["queued", "failed", "requeued", "sent"]
    r = await acct.client.post(f"/api/v1/deliveries/{d['id']}/retry")
    assert r.status_code == 409 and "sent" in r.json()["error"]


async def test_queue_cli_list_show_retry_purge(env, smtp_server, tmp_path):
    acct, iid, srv = await sender(env, smtp_server, rcpt_default="451 4.3.0 try later")
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": iid, "to": ["a@client.example", "b@client.example"], "text": "x"},
    )
    mid = r.json()["id"]
    await env.rt.worker.run_once()
    ids = [d["id"] for d in (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]]
    cenv = cli_env(
        tmp_path, env.rt.settings.database_url, POSTWAY_SECRET_KEY=env.rt.settings.secret_key
    )
    res = await run(cenv, "queue", "list", "--state", "deferred")
    assert res.returncode == 0, res.stderr
    assert "a@client.example" in res.stdout and "b@client.example" in res.stdout
    assert "2 deliveries" in res.stderr
    res = await run(cenv, "queue", "show", ids[0])
    shown = json.loads(res.stdout)
    assert shown["state"] == "deferred" and [e["type"] for e in shown["events"]] == [
        "queued",
        "deferred",
    ]
    assert "451" in shown["diagnostic"]
    res = await run(cenv, "queue", "purge", ids[1], "--yes")
    assert res.returncode == 0 and "purged 1" in res.stderr
    srv.rcpt_default = "250 2.1.5 OK"
    res = await run(cenv, "queue", "retry", "--all-deferred")
    assert res.returncode == 0 and "1 queued" in res.stderr
    await env.drain()
    ds = {
        d["id"]: d for d in (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]
    }
    assert ds[ids[0]]["state"] == "sent"
    assert ds[ids[1]]["state"] == "failed" and ds[ids[1]]["reason"] == "purged"
    res = await run(cenv, "queue", "list", "--state", "nonsense")
    assert res.returncode == 1 and "use one of" in res.stderr


async def test_metrics_count_outcomes(env, smtp_server):
    acct, iid, _ = await sender(env, smtp_server)
    await acct.client.post(
        "/api/v1/messages", json={"identity_id": iid, "to": ["a@client.example"], "text": "x"}
    )
    await env.drain()
    r = await env.app_client.get("/metrics")
    assert r.status_code == 200
    assert 'postway_delivery_outcomes_total{channel="smtp",reason="",state="sent"} 1.0' in r.text
    assert "postway_delivery_attempt_seconds_count" in r.text
    env.rt.settings.metrics_token = "m-token"
    assert (await env.app_client.get("/metrics")).status_code == 401
    ok = await env.app_client.get("/metrics", headers={"Authorization": "Bearer m-token"})
    assert ok.status_code == 200
