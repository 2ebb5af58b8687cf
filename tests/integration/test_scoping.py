"""Two users, every endpoint: nobody sees, changes or sends through another user's data."""

from __future__ import annotations

from typing import Any

from peers.tls import TLSPeer


async def _mallory_and_alice(env: Any, smtp_server: Any) -> tuple[Any, Any, dict[str, str]]:
    srv = await smtp_server()
    alice = await env.account("alice@acme.example")
    mallory = await env.account("mallory@acme.example")
    r = await alice.client.post(
        "/api/v1/identities", json={"name": "Alice", "email": "alice@acme.example"}
    )
    identity = r.json()["id"]
    await alice.client.put(
        "/api/v1/delivery-channel",
        json={
            "channel": "smtp",
            "smtp": {"host": "127.0.0.1", "port": srv.port, "security": "none"},
        },
    )
    r = await alice.client.post(
        "/api/v1/messages",
        json={"identity_id": identity, "to": ["carol@client.example"], "text": "private"},
    )
    assert r.status_code == 202, r.text
    message = r.json()["id"]
    await env.drain()
    return alice, mallory, {"identity": identity, "message": message}


async def test_every_endpoint_is_scoped_to_its_owner(env, smtp_server):
    alice, mallory, ids = await _mallory_and_alice(env, smtp_server)
    iid, mid = ids["identity"], ids["message"]

    # reads: another user's objects are "not found", lists are empty
    assert (await mallory.client.get("/api/v1/identities")).json() == []
    assert (await mallory.client.get(f"/api/v1/identities/{iid}")).status_code == 404
    assert (await mallory.client.get(f"/api/v1/messages/{mid}")).status_code == 404
    assert (await mallory.client.get(f"/api/v1/messages/{mid}/events")).status_code == 404
    assert (await mallory.client.get("/api/v1/messages")).json()["total"] == 0
    assert (await mallory.client.get("/api/v1/conversations")).json()["total"] == 0
    r = await mallory.client.get("/api/v1/conversations/carol@client.example")
    assert r.status_code == 404
    assert (await mallory.client.get("/api/v1/failed-deliveries")).json()["total"] == 0
    assert (await mallory.client.get("/api/v1/delivery-channel")).json()["source"] == "default"

    # writes: cannot change, verify, delete or send through Alice's identity
    r = await mallory.client.patch(f"/api/v1/identities/{iid}", json={"name": "Evil"})
    assert r.status_code == 404
    assert (await mallory.client.post(f"/api/v1/identities/{iid}/verify")).status_code == 404
    assert (await mallory.client.delete(f"/api/v1/identities/{iid}")).status_code == 404
    r = await mallory.client.post(
        "/api/v1/messages", json={"identity_id": iid, "to": ["x@client.example"], "text": "hi"}
    )
    assert r.status_code == 404
    r = await mallory.client.get(f"/api/v1/messages/{mid}")
    delivery = (await alice.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"][0]["id"]
    assert (await mallory.client.post(f"/api/v1/deliveries/{delivery}/retry")).status_code == 404
    # the SMTP test endpoint never falls back to Alice's relay or reveals it
    r = await mallory.client.post("/api/v1/delivery-channel/smtp/test")
    assert r.status_code == 400

    # Alice still sees all of her own, unchanged
    assert (await alice.client.get(f"/api/v1/identities/{iid}")).json()["name"] == "Alice"
    assert (await alice.client.get(f"/api/v1/messages/{mid}")).status_code == 200
    listed = (await alice.client.get("/api/v1/messages")).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == mid
    assert [d["recipient"] for d in listed["items"][0]["deliveries"]] == ["carol@client.example"]
    conv = (await alice.client.get("/api/v1/conversations")).json()
    assert conv["total"] == 1 and conv["items"][0]["recipient"] == "carol@client.example"
    assert conv["items"][0]["latest_state"] == "sent"


async def test_requests_without_valid_token_are_refused(env):
    client = env.app_client
    paths = [
        ("GET", "/api/v1/identities"),
        ("POST", "/api/v1/identities"),
        ("GET", "/api/v1/identities/x"),
        ("PATCH", "/api/v1/identities/x"),
        ("DELETE", "/api/v1/identities/x"),
        ("POST", "/api/v1/identities/x/verify"),
        ("GET", "/api/v1/delivery-channel"),
        ("PUT", "/api/v1/delivery-channel"),
        ("PUT", "/api/v1/team/delivery-channel"),
        ("POST", "/api/v1/delivery-channel/smtp/test"),
        ("GET", "/api/v1/delivery-channel/smtp/bounce-mailbox"),
        ("PUT", "/api/v1/delivery-channel/smtp/bounce-mailbox"),
        ("DELETE", "/api/v1/delivery-channel/smtp/bounce-mailbox"),
        ("POST", "/api/v1/delivery-channel/smtp/bounce-mailbox/test"),
        ("GET", "/api/v1/delivery-channel/gmail/connect"),
        ("DELETE", "/api/v1/delivery-channel/gmail"),
        ("POST", "/api/v1/messages"),
        ("POST", "/api/v1/messages/batch"),
        ("GET", "/api/v1/messages"),
        ("GET", "/api/v1/messages/x"),
        ("GET", "/api/v1/messages/x/events"),
        ("GET", "/api/v1/conversations"),
        ("GET", "/api/v1/conversations/a@b.example"),
        ("GET", "/api/v1/failed-deliveries"),
        ("GET", "/api/v1/suppressions"),
        ("DELETE", "/api/v1/suppressions/a@b.example"),
        ("GET", "/api/v1/blocked-domains"),
        ("PUT", "/api/v1/blocked-domains"),
        ("GET", "/api/v1/throttle"),
        ("POST", "/api/v1/deliveries/x/retry"),
        ("PUT", "/api/v1/throttle"),
        ("GET", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/x"),
    ]
    for method, path in paths:
        for headers in (
            {},
            {"Authorization": "Bearer pw_not-a-real-token"},
            {"Authorization": "Basic x"},
        ):
            r = await client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert "error" in r.json()
    # every /api/v1 route in the OpenAPI document is in the list above
    spec = (await client.get("/openapi.json")).json()
    documented = {
        (m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p.startswith("/api/v1")
    }
    listed = {(m, p.replace("/x", "/{identity_id}")) for m, p in paths}
    assert len(documented) == len(paths), sorted(documented)
    assert ("GET", "/api/v1/identities/{identity_id}") in listed


async def test_admin_endpoints_need_admin(env, tls_peer: TLSPeer):
    rep = await env.account("rep@acme.example")
    admin = await env.account("boss@acme.example", admin=True)
    assert (await rep.client.get("/api/v1/suppressions")).status_code == 403
    r = await rep.client.put("/api/v1/blocked-domains", json={"domains": ["x.example"]})
    assert r.status_code == 403
    r = await rep.client.put("/api/v1/team/delivery-channel", json={"channel": "managed"})
    assert r.status_code == 403
    r = await rep.client.put("/api/v1/throttle", json={"batch_size": 1})
    assert r.status_code == 403
    r = await admin.client.put("/api/v1/blocked-domains", json={"domains": ["Rival.example"]})
    assert r.status_code == 200 and r.json()["domains"] == ["rival.example"]
    assert (await rep.client.get("/api/v1/blocked-domains")).json()["domains"] == ["rival.example"]
