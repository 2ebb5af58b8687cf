"""Identity confirmation mails cannot be used to mail strangers: limits per user and per
target address (429 with Retry-After past them), and no text of the requester's in the mail."""

from __future__ import annotations

import asyncio
import email
from email import policy

import httpx
from web_login import form_token, web_login

NAME = "Win a FREE cruise at spam.example"


async def _identity(acct, address: str, name: str = NAME) -> str:
    r = await acct.client.post("/api/v1/identities", json={"name": name, "email": address})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_one_user_gets_five_confirmation_mails_an_hour(env, smtp_server):
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account("mallory@acme.example")
    targets = [f"victim{i}@client.example" for i in range(6)]
    ids = [await _identity(acct, t) for t in targets]
    for iid in ids[:5]:
        r = await acct.client.post(f"/api/v1/identities/{iid}/verify")
        assert r.status_code == 202, r.text
    r = await acct.client.post(f"/api/v1/identities/{ids[5]}/verify")
    assert r.status_code == 429
    assert "at most 5 an hour" in r.json()["error"]
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    await env.drain()
    assert sorted(t for m in sink.received for t in m.rcpt_tos) == sorted(targets[:5])


async def test_one_address_gets_three_confirmation_mails_a_day_whoever_asks(env, smtp_server):
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    victim = "ceo@client.example"
    first = await env.account("mallory@acme.example")
    second = await env.account("trudy@acme.example")
    iid = await _identity(first, victim)
    for _ in range(3):
        assert (await first.client.post(f"/api/v1/identities/{iid}/verify")).status_code == 202
    r = await first.client.post(f"/api/v1/identities/{iid}/verify")
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert f"to {victim}: at most 3 a day" in r.json()["error"]
    # another user asking for the same address is counted against the same limit
    other = await _identity(second, victim)
    r = await second.client.post(f"/api/v1/identities/{other}/verify")
    assert r.status_code == 429
    # the identities page's button answers the same, as a page saying when to try again
    async with httpx.AsyncClient(
        transport=env.app_client._transport, base_url="http://postway.test"
    ) as web:
        assert (await web_login(web, first.email, "correct horse battery")).status_code == 303
        csrf = form_token(await web.get("/identities"))
        r = await web.post(f"/identities/{iid}/verify", data={"csrf": csrf})
        assert r.status_code == 429 and "at most 3 a day" in r.text
        assert "Retry-After" in r.headers
    await env.drain()
    assert len(sink.received) == 3 and all(m.rcpt_tos == [victim] for m in sink.received)


async def test_the_confirmation_mail_holds_no_text_of_the_requesters(env, smtp_server):
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account("mallory@acme.example")
    iid = await _identity(acct, "victim@client.example")
    assert (await acct.client.post(f"/api/v1/identities/{iid}/verify")).status_code == 202
    await env.drain()
    assert len(sink.received) == 1
    raw = sink.received[0].data
    assert b"cruise" not in raw.lower() and b"spam.example" not in raw
    mail = email.message_from_bytes(raw, policy=policy.default)
    body = mail.get_body(("plain",)).get_content()
    assert "victim@client.example" in body and "http://postway.test/verify/" in body
    assert mail["Subject"] == "Confirm your sending address"


async def test_requests_sent_together_cannot_pass_the_limit_together(env, smtp_server):
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account("mallory@acme.example")
    ids = [await _identity(acct, f"victim{i}@client.example") for i in range(12)]
    answers = await asyncio.gather(
        *(acct.client.post(f"/api/v1/identities/{iid}/verify") for iid in ids)
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * 5 + [429] * 7
    await env.drain()
    assert len(sink.received) == 5
