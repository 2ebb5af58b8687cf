"""Bad input gets a clear 4xx that says what to fix, and nothing is half-stored."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import func, select

from postway.store.models import Delivery, DeliveryEvent, Identity, Message


async def counts(env: Any) -> tuple[int, int, int, int]:
    async with env.rt.db.session() as s:
        return (
            await s.scalar(select(func.count()).select_from(Message)),
            await s.scalar(select(func.count()).select_from(Delivery)),
            await s.scalar(select(func.count()).select_from(DeliveryEvent)),
            await s.scalar(select(func.count()).select_from(Identity)),
        )


async def sender(env: Any) -> tuple[Any, str]:
    acct = await env.account("ada@acme.example")
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
    )
    await acct.client.put(
        "/api/v1/delivery-channel",
        json={"channel": "smtp", "smtp": {"host": "127.0.0.1", "port": 2599, "security": "none"}},
    )
    return acct, r.json()["id"]


BAD_MESSAGES = [
    ({"to": ["bob@"]}, "to[0]", "not a valid email address"),
    ({"to": ["bob@client.example", "nope"]}, "to[1]", "not a valid email address"),
    ({"to": []}, "to", "at least one recipient"),
    ({"cc": ["a@b.example\r\nBcc: victim@x.example"]}, "cc[0]", "line break"),
    ({"to": ["a@b.example, c@d.example"]}, "to[0]", "comma"),
    ({"subject": "Hi\r\nBcc: victim@x.example"}, "subject", "line break"),
    ({"subject": "Hi\nX-Injected: 1"}, "subject", "line break"),
    ({"attachments": [{"filename": "a\r\n.txt", "content_base64": "aGk="}]}, "filename", "line"),
    ({"attachments": [{"filename": "a.txt", "content_base64": "***"}]}, "attachments", "base64"),
    (
        {"attachments": [{"filename": "a.txt", "content_type": "text", "content_base64": "aGk="}]},
        "content_type",
        "",
    ),
    ({"identity_id": "0" * 32}, None, "no identity"),
    ({"unknown_field": 1}, "unknown_field", "unknown field"),
    ({"to": "bob@client.example"}, "to", ""),
]


@pytest.mark.parametrize(("patch", "field", "words"), BAD_MESSAGES)
async def test_bad_message_refused_and_nothing_stored(env, patch, field, words):
    acct, identity_id = await sender(env)
    before = await counts(env)
    body = {"identity_id": identity_id, "to": ["bob@client.example"], "subject": "s", "text": "t"}
    body.update(patch)
    r = await acct.client.post("/api/v1/messages", json=body)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    if field:
        assert field in err or field in r.json().get("field", ""), err
    assert words.lower() in err.lower(), err
    assert await counts(env) == before


async def test_invalid_json_and_oversized(env, tmp_path):
    acct, identity_id = await sender(env)
    r = await acct.client.post(
        "/api/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    env.rt.settings.max_message_bytes = 50_000
    before = await counts(env)
    big = base64.b64encode(b"x" * 60_000).decode()
    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["bob@client.example"],
            "text": "see attached",
            "attachments": [{"filename": "big.bin", "content_base64": big}],
        },
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["bob@client.example"], "text": "y" * 60_000},
    )
    assert r.status_code == 413
    assert await counts(env) == before


BAD_IDENTITIES = [
    ({"name": "Ada", "email": "not-an-address"}, "email"),
    ({"name": "Ada\r\nBcc: x@y.example", "email": "ada@acme.example"}, "name"),
    ({"name": "Ada", "email": "ada@acme.example\r\nBcc: x@y.example"}, "email"),
    ({"name": "Ada", "email": "ada@acme.example", "reply_to": "nope"}, "reply_to"),
    ({"name": "Ada", "email": "ada@acme.example", "channel": "carrier-pigeon"}, "channel"),
    ({"email": "ada@acme.example"}, "name"),
]


@pytest.mark.parametrize(("body", "field"), BAD_IDENTITIES)
async def test_bad_identity_refused(env, body, field):
    acct = await env.account("ada@acme.example")
    before = await counts(env)
    r = await acct.client.post("/api/v1/identities", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]
    assert await counts(env) == before


async def test_idn_identity_accepted_and_duplicate_refused(env):
    acct = await env.account("ada@acme.example")
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Jürgen Müller", "email": "juergen@bücher.example"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "juergen@bücher.example"
    assert r.json()["verified"] is False
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Again", "email": "juergen@bücher.example"}
    )
    assert r.status_code == 409


BAD_CHANNELS = [
    ({"channel": "fax"}, "channel"),
    ({"channel": "smtp"}, "smtp"),
    ({"channel": "smtp", "smtp": {"host": "", "port": 25}}, "smtp.host"),
    ({"channel": "smtp", "smtp": {"host": "relay.example", "port": 70000}}, "smtp.port"),
    ({"channel": "smtp", "smtp": {"host": "relay.example", "security": "ssl3"}}, "smtp.security"),
    ({"channel": "smtp", "smtp": {"host": "relay.example", "auth": "kerberos"}}, "smtp.auth"),
    ({"channel": "smtp", "smtp": {"host": "no-such-host.invalid"}}, "smtp.host"),
    ({"channel": "gmail"}, "Gmail"),
]


@pytest.mark.parametrize(("body", "words"), BAD_CHANNELS)
async def test_bad_channel_settings_refused(env, body, words):
    acct = await env.account("ada@acme.example")
    r = await acct.client.put("/api/v1/delivery-channel", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert words in r.json()["error"]
    assert (await acct.client.get("/api/v1/delivery-channel")).json()["source"] == "default"


async def test_private_relay_refused_unless_allowed(env):
    acct = await env.account("ada@acme.example")
    env.rt.settings.allow_private_relays = False
    for host in ("127.0.0.1", "localhost", "10.1.2.3", "192.168.0.10"):
        r = await acct.client.put(
            "/api/v1/delivery-channel", json={"channel": "smtp", "smtp": {"host": host}}
        )
        assert r.status_code == 400, host
        assert "private or loopback" in r.json()["error"]
        r = await acct.client.post("/api/v1/delivery-channel/smtp/test", json={"host": host})
        assert r.status_code == 200 and r.json()["ok"] is False
        assert r.json()["step"] == "resolve"
