"""The Failed Deliveries tab and the live parts over HTTP, on SQLite and PostgreSQL: filters,
search, paging, the "new" badge, resend and its refusals, lifting a suppression (admins
only), and the live parts answered to their owner only."""

from __future__ import annotations

import re
from contextlib import aclosing
from typing import Any

import httpx
from sqlalchemy import select
from web_login import form_token, web_login

from peers.smtp import ScriptedSMTPServer
from postway.store.models import Delivery, DeliveryEvent, Organisation, Suppression
from postway.store.users import user_for_token

PASSWORD = "correct horse battery"
UNKNOWN = "550 5.1.1 No such user here"
FULL = "552 5.2.2 Mailbox full, quota exceeded"
ROW = re.compile(r'<tr class="failure"')
Env = Any  # tests/integration/conftest.py: Env
Account = Any  # tests/integration/conftest.py: Account


def browser(env: Env) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=env.app_client._transport.app, client=("127.0.0.1", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://postway.test")


async def logged_in(env: Env, email: str) -> tuple[httpx.AsyncClient, str]:
    web = browser(env)
    r = await web_login(web, email, PASSWORD)
    assert r.status_code == 303, r.text
    return web, form_token(await web.get("/conversations"))


async def send(acct: Account, identity: str, to: list[str]) -> dict[str, str]:
    """Send one message; return its id and its delivery ids by recipient."""
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity, "to": to, "subject": "Numbers", "text": "Hello"},
    )
    assert r.status_code == 202, r.text
    m = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()
    return {"message": m["id"], **{d["recipient"]: d["id"] for d in m["deliveries"]}}


async def state_of(env: Env, delivery_id: str) -> str:
    async with env.rt.db.session() as s, s.begin():
        d = await s.get(Delivery, delivery_id)
        assert d is not None
        return d.state


async def test_filters_search_paging_and_the_new_badge(env: Env) -> None:
    unknown = [f"gone{i:02d}@example.org" for i in range(26)]
    full = ["full-a@example.com", "full-b@example.com"]
    replies = {a: UNKNOWN for a in unknown} | {a: FULL for a in full}
    with ScriptedSMTPServer(rcpt_replies=replies) as relay:
        acct, identity = await env.relay_sender(relay.port)
        await send(acct, identity, unknown + full)
        await env.drain()
    web, _ = await logged_in(env, acct.email)
    async with aclosing(web):
        page = (await web.get("/conversations")).text
        assert 'class="badge new-count">28 new<' in page

        first = (await web.get("/conversations?tab=failed")).text
        assert len(ROW.findall(first)) == 25
        assert "Page 1 of 2 · 28 in all" in first
        assert first.count('<span class="badge info">New</span>') == 25
        second = (await web.get("/conversations?tab=failed&page=2")).text
        assert len(ROW.findall(second)) == 3
        # opened: nothing is new any more
        assert "new-count" not in (await web.get("/conversations")).text
        again = (await web.get("/conversations?tab=failed")).text
        assert '<span class="badge info">New</span>' not in again

        async def rows(query: str) -> list[str]:
            html = (await web.get(f"/conversations?tab=failed&{query}")).text
            return re.findall(r'<tr class="failure" data-recipient="([^"]+)"', html)

        assert sorted(await rows("reason=mailboxfull")) == full
        assert await rows("q=GONE07") == ["gone07@example.org"]
        assert sorted(await rows("q=example.com")) == full
        assert await rows("q=%25") == []  # a wildcard is searched for as text
        assert await rows("state=bounced") == []
        assert await rows("state=failed&reason=mailboxfull&channel=smtp") in (full, full[::-1])
        assert await rows("channel=managed") == []
        none = (await web.get("/conversations?tab=failed&channel=managed")).text
        assert "No failed deliveries match these filters" in none
        # the filters survive paging
        filtered = (await web.get("/conversations?tab=failed&reason=userunknown")).text
        assert "reason=userunknown&amp;page=2" in filtered

        # a new failure after the visit is counted again
        with ScriptedSMTPServer(rcpt_replies={"late@example.org": UNKNOWN}) as relay2:
            r = await acct.client.put(
                "/api/v1/delivery-channel",
                json={"channel": "smtp", "smtp": {"host": "127.0.0.1", "port": relay2.port,
                                                  "security": "none"}},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            await send(acct, identity, ["late@example.org"])
            await env.drain()
        assert 'class="badge new-count">1 new<' in (await web.get("/conversations")).text


async def test_resend_is_refused_while_suppressed_and_lifting_is_for_admins(env: Env) -> None:
    replies = {"gone@example.org": UNKNOWN, "x@blocked.example": UNKNOWN, "m@example.org": FULL}
    with ScriptedSMTPServer(rcpt_replies=replies) as relay:
        admin, identity = await env.relay_sender(relay.port, "boss@acme.example", admin=True)
        member, member_identity = await env.relay_sender(
            relay.port, "rep@other.example", admin=False
        )
        ids = await send(admin, identity, ["gone@example.org", "x@blocked.example"])
        member_ids = await send(member, member_identity, ["m@example.org"])
        await env.drain()
    gone, blocked = ids["gone@example.org"], ids["x@blocked.example"]
    async with env.rt.db.session() as s, s.begin():
        boss = await user_for_token(s, admin.token)
        s.add(Suppression(org_id=boss.org_id, address="gone@example.org", reason="userunknown"))
        org = await s.get(Organisation, boss.org_id)
        assert org is not None
        org.blocked_domains = ["blocked.example"]

    web, csrf = await logged_in(env, admin.email)
    member_web, member_csrf = await logged_in(env, member.email)
    async with aclosing(web), aclosing(member_web):
        page = (await web.get("/conversations?tab=failed")).text
        assert "Not resendable: this address is suppressed" in page
        assert "Not resendable: its domain is on your organisation&#39;s blocked list" in page
        assert f"/failed-deliveries/{gone}/lift-suppression" in page
        assert f"/failed-deliveries/{gone}/resend" not in page

        # resend refused with the reason, nothing changes
        r = await web.post(f"/failed-deliveries/{gone}/resend", data={"csrf": csrf})
        assert r.status_code == 409 and "suppressed" in r.text
        r = await web.post(f"/failed-deliveries/{blocked}/resend", data={"csrf": csrf})
        assert r.status_code == 409 and "blocked list" in r.text
        assert await state_of(env, gone) == "failed"

        # lifting: members get 403, a forged form 403, someone else's delivery 404
        r = await member_web.post(
            f"/failed-deliveries/{member_ids['m@example.org']}/lift-suppression",
            data={"csrf": member_csrf},
        )
        assert r.status_code == 403
        assert "administrator" in r.text
        r = await web.post(f"/failed-deliveries/{gone}/lift-suppression", data={"csrf": "forged"})
        assert r.status_code == 403
        r = await member_web.post(f"/failed-deliveries/{gone}/resend", data={"csrf": member_csrf})
        assert r.status_code == 404
        async with env.rt.db.session() as s, s.begin():
            assert await s.scalar(select(Suppression.id)) is not None

        back = "/conversations?tab=failed&q=gone"
        r = await web.post(
            f"/failed-deliveries/{gone}/lift-suppression", data={"csrf": csrf, "back": back}
        )
        assert r.status_code == 303 and r.headers["location"] == back
        async with env.rt.db.session() as s, s.begin():
            assert await s.scalar(select(Suppression.id)) is None

        # now it may be resent, through the queue's own transition (a "requeued" event)
        r = await web.post(
            f"/failed-deliveries/{gone}/resend", data={"csrf": csrf, "back": "https://evil.test/"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/conversations?tab=failed"
        assert await state_of(env, gone) == "queued"
        async with env.rt.db.session() as s, s.begin():
            kinds = list(
                await s.scalars(select(DeliveryEvent.type).where(DeliveryEvent.delivery_id == gone))
            )
        assert kinds[-1] == "requeued"

        # the member's own soft failure: resend allowed
        r = await member_web.post(
            f"/failed-deliveries/{member_ids['m@example.org']}/resend", data={"csrf": member_csrf}
        )
        assert r.status_code == 303
        assert await state_of(env, member_ids["m@example.org"]) == "queued"


async def test_live_parts_answer_their_owner_only_and_stop_when_final(env: Env) -> None:
    with ScriptedSMTPServer(rcpt_replies={"slow@example.org": "451 4.3.0 Try later"}) as relay:
        owner, identity = await env.relay_sender(relay.port, "owner@acme.example")
        other, _ = await env.relay_sender(relay.port, "other@other.example", admin=False)
        ids = await send(owner, identity, ["slow@example.org"])
        await env.drain(rounds=3)
        part = f"/live/messages/{ids['message']}"
        web, _ = await logged_in(env, owner.email)
        other_web, _ = await logged_in(env, other.email)
        async with aclosing(web), aclosing(other_web), browser(env) as anonymous:
            mine = await web.get(part)
            assert mine.status_code == 200
            assert mine.text.lstrip().startswith('<div id="message-live"')
            assert f'data-live-url="{part}"' in mine.text  # still waiting: keep polling
            assert "<html" not in mine.text  # a part, not a page

            assert (await other_web.get(part)).status_code == 404
            r = await anonymous.get(part)
            assert r.status_code == 303 and r.headers["location"] == "/login"
            conv = await other_web.get("/live/conversations")
            assert conv.status_code == 200 and "slow@example.org" not in conv.text
            assert "slow@example.org" in (await web.get("/live/conversations")).text

            relay.set_rcpt_reply("slow@example.org", "250 2.1.5 OK")
            for _ in range(20):
                await env.drain()
                if await state_of(env, ids["slow@example.org"]) == "sent":
                    break
            done = await web.get(part)
            assert "data-live-url" not in done.text  # final: the script stops polling
            assert "Every recipient has an answer." in done.text


async def test_pages_describe_a_greylisting_as_try_again_later_not_a_block(env: Env) -> None:
    greylisted, blocked = "slow@example.org", "shut@example.org"
    replies = {
        greylisted: "451 4.7.1 Greylisted, please try again later",
        blocked: "554 5.7.1 Service unavailable; client host blocked using a block list",
    }
    with ScriptedSMTPServer(rcpt_replies=replies) as relay:
        acct, identity = await env.relay_sender(relay.port)
        ids = await send(acct, identity, [greylisted, blocked])
        await env.drain(rounds=3)
    web, _ = await logged_in(env, acct.email)
    async with aclosing(web):
        page = (await web.get(f"/messages/{ids['message']}")).text
    words = dict(
        re.findall(
            r'data-recipient="([^"]+)".*?<span class="reason-words">([^<]*)</span>', page, re.S
        )
    )
    later = "The receiving server asked us to try again later; Postway will retry."
    assert words[greylisted] == later
    assert "allow-list" in words[blocked]
