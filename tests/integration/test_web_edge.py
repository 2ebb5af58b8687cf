"""The web edge under hostile requests: bodies counted as they stream (a chunked 128 MB POST
is refused early with memory flat), recipient lists refused by count before any address is
looked at, and numbers or names that used to end in a 500."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from served import raw_post, served_postway, status_of
from sqlalchemy import func, select

from postway.store.models import Delivery, Message

MB = 1024 * 1024
ATTACK = 128 * MB
# the served instance takes messages of 2 MB, so its body limit is about 3.8 MB
SERVED = {"POSTWAY_MAX_MESSAGE_BYTES": str(2 * MB)}


async def test_chunked_body_without_a_token_gets_401_before_it_is_read(tmp_path):
    with served_postway(tmp_path, **SERVED) as srv:
        # warm up: imports and pools that the first requests load are not the attack's
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            r = await client.post("/api/v1/messages", json={})
            assert r.status_code == 401
        peak_before = srv.status_kb("VmHWM")

        up = await asyncio.to_thread(raw_post, srv.port, "/api/v1/messages", ATTACK)

        assert status_of(up.response) == 401, up.response[:300]
        assert b'"error"' in up.response
        # the server answered and hung up instead of reading 128 MB (loopback buffers hold a
        # few MB; before the fix every byte was read and parsed before the 401)
        assert up.body_sent < 32 * MB, up.body_sent
        grown_mb = (srv.status_kb("VmHWM") - peak_before) / 1024
        assert grown_mb < 50, f"peak RSS grew by {grown_mb:.0f} MB"


async def test_chunked_body_with_a_token_gets_413_at_the_limit(tmp_path):
    with served_postway(tmp_path, **SERVED) as srv:
        auth = f"Authorization: Bearer {srv.token}\r\n"
        async with httpx.AsyncClient(
            base_url=srv.base_url, headers={"Authorization": f"Bearer {srv.token}"}
        ) as client:
            r = await client.get("/api/v1/messages")
            assert r.status_code == 200, r.text
        peak_before = srv.status_kb("VmHWM")

        up = await asyncio.to_thread(raw_post, srv.port, "/api/v1/messages", ATTACK, auth)

        assert status_of(up.response) == 413, up.response[:300]
        assert b"over the limit" in up.response
        assert up.body_sent < 32 * MB, up.body_sent
        grown_mb = (srv.status_kb("VmHWM") - peak_before) / 1024
        assert grown_mb < 50, f"peak RSS grew by {grown_mb:.0f} MB"

        # a declared Content-Length over the limit is refused from the header alone, and the
        # server still serves normal requests afterwards
        up = await asyncio.to_thread(
            raw_post, srv.port, "/api/v1/identities", ATTACK, auth, chunked=False
        )
        assert status_of(up.response) == 413 and up.body_sent < 32 * MB
        async with httpx.AsyncClient(
            base_url=srv.base_url, headers={"Authorization": f"Bearer {srv.token}"}
        ) as client:
            assert (await client.get("/api/v1/identities")).status_code == 200


async def test_static_name_with_nul_is_404(tmp_path):
    with served_postway(tmp_path) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            for path in ("/static/%00", "/static/app.css%00.js", "/static/..%2Fapp.py"):
                r = await client.get(path)
                assert r.status_code == 404, (path, r.status_code)
            assert (await client.get("/static/app.css")).status_code == 200


# --- counts before per-item work (defect: 400,000 addresses validated before the cap) -------


async def _sender(env):
    acct = await env.account("ada@acme.example")
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
    )
    await acct.client.put(
        "/api/v1/delivery-channel",
        json={"channel": "smtp", "smtp": {"host": "127.0.0.1", "port": 2599, "security": "none"}},
    )
    return acct, r.json()["id"]


async def _stored(env) -> tuple[int, int]:
    async with env.rt.db.session() as s:
        return (
            await s.scalar(select(func.count()).select_from(Message)),
            await s.scalar(select(func.count()).select_from(Delivery)),
        )


async def test_huge_recipient_list_refused_by_count_before_any_address_is_checked(env):
    acct, identity_id = await _sender(env)
    # the first address is invalid: had the addresses been validated first, the answer
    # would be about to[0]; it must be about the count
    to = ["not-an-address"] + [f"r{i}@client.example" for i in range(399_999)]
    r = await acct.client.post(
        "/api/v1/messages",
        content=json.dumps({"identity_id": identity_id, "to": to, "text": "hi"}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text[:300]
    body = r.json()
    assert body["field"] == "to"
    assert "at most 1000" in body["error"] and "400000" in body["error"], body["error"]
    assert await _stored(env) == (0, 0)


async def test_recipients_over_the_cap_across_to_cc_bcc_refused_by_count(env):
    # each list is under the per-list cap, so this reaches the domain's own count check
    acct, identity_id = await _sender(env)
    bad_first = ["not-an-address"] + [f"t{i}@client.example" for i in range(499)]
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": bad_first,
            "cc": [f"c{i}@client.example" for i in range(400)],
            "bcc": [f"b{i}@client.example" for i in range(400)],
            "text": "hi",
        },
    )
    assert r.status_code == 400, r.text[:300]
    assert "at most 1000 recipients" in r.json()["error"] and "1300" in r.json()["error"]
    assert await _stored(env) == (0, 0)


async def test_batch_recipients_counted_before_any_is_checked(env):
    acct, identity_id = await _sender(env)
    one = {"identity_id": identity_id, "text": "hi"}
    messages = [
        {**one, "to": ["not-an-address"] + [f"m{m}r{i}@client.example" for i in range(999)]}
        for m in range(6)
    ]
    r = await acct.client.post("/api/v1/messages/batch", json={"messages": messages})
    assert r.status_code == 400, r.text[:300]
    assert "at most 5000 recipients in one batch" in r.json()["error"], r.json()["error"]
    assert await _stored(env) == (0, 0)


# --- values that used to end in a 500 --------------------------------------------------------

LIST_ENDPOINTS = ["/api/v1/messages", "/api/v1/conversations", "/api/v1/failed-deliveries"]


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
@pytest.mark.parametrize("param", ["offset", "limit"])
async def test_huge_offset_or_limit_is_400_naming_it(env, path, param):
    acct = await env.account("ada@acme.example")
    r = await acct.client.get(path, params={param: "99999999999999999999"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == param and param in r.json()["error"]
    r = await acct.client.get(path, params={param: "-1"})
    assert r.status_code == 400 and r.json()["field"] == param
    assert (await acct.client.get(path, params={"offset": 1_000_000_000})).status_code == 200


BAD_HOSTS = ["ex..com", ".example.com", "a" * 64 + ".example.com", "[not-an-ip]"]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_malformed_relay_host_is_400_naming_the_field(env, host):
    acct = await env.account("ada@acme.example")
    smtp = {"host": host, "port": 587, "security": "none"}
    r = await acct.client.put("/api/v1/delivery-channel", json={"channel": "smtp", "smtp": smtp})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "smtp.host" and "not" in r.json()["error"]
    r = await acct.client.post("/api/v1/delivery-channel/smtp/test", json=smtp)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "smtp.host"
