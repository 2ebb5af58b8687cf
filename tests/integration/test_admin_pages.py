"""The administrator's web pages over HTTP, as a browser posts them (session cookie + CSRF
token from the page): users, throttling, blocked domains, suppressions, the queue; members
get 403 on every admin page and form; an admin sees only their own organisation."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select
from web_login import form_token, web_login

from postway.store.models import Delivery, Suppression, User
from postway.store.users import create_token, create_user
from postway.web.admin_pages import ADMIN_FORM_PATHS, ADMIN_PAGE_PATHS

PASSWORD = "correct horse battery"


async def browser(env, email: str, password: str = PASSWORD) -> httpx.AsyncClient:
    """A logged-in web client (cookies kept, redirects not followed)."""
    client = httpx.AsyncClient(
        transport=env.app_client._transport, base_url="http://postway.test"
    )
    r = await web_login(client, email, password)
    assert r.status_code == 303, r.text
    return client


async def post_form(client: httpx.AsyncClient, page: str, action: str, **data: str):
    """POST a form of `page` the way the browser would: with the CSRF token the page carries."""
    token = form_token(await client.get(page))
    return await client.post(action, data={"csrf": token, **data})


async def user_id(env, email: str) -> str:
    async with env.rt.db.session() as s, s.begin():
        return (await s.scalar(select(User.id).where(User.email == email))) or ""


async def test_admin_creates_a_user_who_can_log_in_and_sets_roles(env):
    await env.account("boss@acme.example", admin=True)
    admin = await browser(env, "boss@acme.example")
    page = await admin.get("/admin/users")
    assert page.status_code == 200 and "boss@acme.example" in page.text
    r = await post_form(
        admin, "/admin/users", "/admin/users", email="New.Rep@Acme.example", password="a new rep pw"
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/users"
    rep = await browser(env, "new.rep@acme.example", "a new rep pw")
    assert (await rep.get("/conversations")).status_code == 200
    assert (await rep.get("/admin/users")).status_code == 403

    rid = await user_id(env, "new.rep@acme.example")
    r = await post_form(admin, "/admin/users", f"/admin/users/{rid}/role", role="admin")
    assert r.status_code == 303
    assert (await rep.get("/admin/users")).status_code == 200
    r = await post_form(admin, "/admin/users", f"/admin/users/{rid}/role", role="member")
    assert r.status_code == 303
    assert (await rep.get("/admin/users")).status_code == 403

    # no password typed: one is made up and shown once, and it works
    r = await post_form(admin, "/admin/users", "/admin/users", email="third@acme.example")
    assert r.status_code == 200
    shown = re.search(r'id="one-time-password">([^<]+)<', r.text)
    assert shown, r.text
    third = await browser(env, "third@acme.example", shown.group(1))
    assert (await third.get("/conversations")).status_code == 200

    # the only administrator cannot make themselves a member
    bid = await user_id(env, "boss@acme.example")
    r = await post_form(admin, "/admin/users", f"/admin/users/{bid}/role", role="member")
    assert r.status_code == 409 and "only administrator" in r.text
    assert (await admin.get("/admin/users")).status_code == 200
    r = await post_form(admin, "/admin/users", "/admin/users", email="bad", password="x")
    assert r.status_code == 400 and 'aria-invalid="true"' in r.text


async def test_deactivated_user_cannot_log_in_or_use_tokens(env):
    await env.account("boss@acme.example", admin=True)
    member = await env.account("rep@acme.example")
    assert (await member.client.get("/api/v1/identities")).status_code == 200
    rep_web = await browser(env, "rep@acme.example")
    admin = await browser(env, "boss@acme.example")
    rid = await user_id(env, "rep@acme.example")

    r = await post_form(admin, "/admin/users", f"/admin/users/{rid}/deactivate")
    assert r.status_code == 303
    assert "Deactivated" in (await admin.get("/admin/users")).text
    # the token, the open session and the password are all refused
    r = await member.client.get("/api/v1/identities")
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    async with env.rt.db.session() as s, s.begin():  # as `postway token create` would
        later = await create_token(s, await s.get(User, rid))
    r = await member.client.get("/api/v1/identities", headers={"Authorization": f"Bearer {later}"})
    assert r.status_code == 401 and "deactivated" in r.json()["error"]
    r = await rep_web.get("/conversations")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    fresh = httpx.AsyncClient(transport=env.app_client._transport, base_url="http://postway.test")
    r = await web_login(fresh, "rep@acme.example", PASSWORD)
    assert r.status_code == 401 and "wrong email or password" in r.text

    # reactivated: the password works again; the revoked token stays revoked
    r = await post_form(admin, "/admin/users", f"/admin/users/{rid}/reactivate")
    assert r.status_code == 303
    assert (await web_login(fresh, "rep@acme.example", PASSWORD)).status_code == 303
    assert (await member.client.get("/api/v1/identities")).status_code == 401

    # an administrator cannot deactivate themselves
    bid = await user_id(env, "boss@acme.example")
    r = await post_form(admin, "/admin/users", f"/admin/users/{bid}/deactivate")
    assert r.status_code == 403 and "yourself" in r.text


async def test_reset_password_shows_a_new_one_once_and_ends_sessions(env):
    await env.account("boss@acme.example", admin=True)
    await env.account("rep@acme.example")
    rep_web = await browser(env, "rep@acme.example")
    admin = await browser(env, "boss@acme.example")
    rid = await user_id(env, "rep@acme.example")
    r = await post_form(admin, "/admin/users", f"/admin/users/{rid}/reset-password")
    assert r.status_code == 200
    new = re.search(r'id="one-time-password">([^<]+)<', r.text)
    assert new and len(new.group(1)) >= 16
    assert (await rep_web.get("/conversations")).status_code == 303  # session ended
    fresh = httpx.AsyncClient(transport=env.app_client._transport, base_url="http://postway.test")
    assert (await web_login(fresh, "rep@acme.example", PASSWORD)).status_code == 401
    assert (await web_login(fresh, "rep@acme.example", new.group(1))).status_code == 303
    # shown once: the users page does not carry it
    assert new.group(1) not in (await admin.get("/admin/users")).text


async def test_throttle_and_blocked_domains_set_on_the_pages_rule_the_next_send(
    env, smtp_server
):
    srv = await smtp_server()
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=True)
    admin = await browser(env, "boss@acme.example")
    # a batch of 1 for the smtp channel only, then a long wait; every channel otherwise free
    r = await post_form(
        admin,
        "/admin/throttle",
        "/admin/throttle",
        **{"smtp.batch_size": "1", "smtp.wait_seconds": "3600"},
    )
    assert r.status_code == 303, r.text
    saved = (await acct.client.get("/api/v1/throttle")).json()
    assert saved["batch_size"] is None
    assert saved["channels"]["smtp"] == {
        "batch_size": 1,
        "wait_seconds": 3600.0,
        "daily_cap": None,
        "per_minute": None,
    }
    page = await admin.get("/admin/throttle")
    shown = re.search(r'<input id="smtp\.batch_size"[^>]*value="([^"]*)"', page.text)
    assert shown and shown.group(1) == "1"
    r = await post_form(
        admin,
        "/admin/blocked-domains",
        "/admin/blocked-domains",
        domains="Rival.example\n@other.example",
    )
    assert r.status_code == 303
    page = await admin.get("/admin/blocked-domains")
    assert "<code>rival.example</code>" in page.text and "<code>other.example</code>" in page.text

    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": identity_id,
            "to": ["ceo@rival.example", "a@client.example", "b@client.example"],
            "text": "hello",
        },
    )
    mid = r.json()["id"]
    await env.rt.worker.run_once()
    await env.rt.worker.run_once()
    ds = {
        d["recipient"]: d
        for d in (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]
    }
    assert ds["ceo@rival.example"]["state"] == "failed"
    assert ds["ceo@rival.example"]["reason"] == "blocked-domain"
    states = sorted(ds[a]["state"] for a in ("a@client.example", "b@client.example"))
    assert states == ["queued", "sent"]
    waiting = next(d for a, d in ds.items() if d["state"] == "queued")
    assert waiting["events"][-1]["type"] == "throttled" and waiting["attempts"] == 0
    assert [t.rcpt_tos for t in srv.received] in (
        [["a@client.example"]],
        [["b@client.example"]],
    )

    # bad input: the page says which box, and nothing is saved
    r = await post_form(admin, "/admin/throttle", "/admin/throttle", **{"gmail.daily_cap": "0"})
    assert r.status_code == 400 and 'id="gmail.daily_cap"' in r.text
    assert (await acct.client.get("/api/v1/throttle")).json()["channels"]["smtp"]["batch_size"] == 1
    r = await post_form(
        admin, "/admin/blocked-domains", "/admin/blocked-domains", domains="not a domain"
    )
    assert r.status_code == 400 and "not a domain name" in r.text


async def _suppress(env, org_id: str, address: str) -> None:
    async with env.rt.db.session() as s, s.begin():
        s.add(Suppression(org_id=org_id, address=address, reason="userunknown"))


async def _org_of(env, email: str) -> str:
    async with env.rt.db.session() as s, s.begin():
        return (await s.scalar(select(User.org_id).where(User.email == email))) or ""


async def test_admin_searches_and_lifts_a_suppression(env, smtp_server):
    srv = await smtp_server()
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=True)
    org = await _org_of(env, "boss@acme.example")
    await _suppress(env, org, "gone@client.example")
    await _suppress(env, org, "other@elsewhere.example")
    admin = await browser(env, "boss@acme.example")
    page = await admin.get("/admin/suppressions", params={"q": "CLIENT"})
    assert "gone@client.example" in page.text and "other@elsewhere.example" not in page.text
    r = await post_form(
        admin,
        "/admin/suppressions",
        "/admin/suppressions/lift",
        address="gone@client.example",
        q="client",
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/suppressions?q=client"
    page = await admin.get("/admin/suppressions")
    assert "will be sent again" in page.text  # the notice
    assert 'data-address="gone@client.example"' not in page.text
    assert 'data-address="other@elsewhere.example"' in page.text
    # lifted: the next send goes out
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["gone@client.example"], "text": "hi"},
    )
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "sent"
    r = await post_form(
        admin, "/admin/suppressions", "/admin/suppressions/lift", address="gone@client.example"
    )
    assert r.status_code == 404


async def test_admin_retries_and_purges_from_the_queue_page(env, smtp_server):
    srv = await smtp_server(rcpt_default="451 4.3.0 try later")
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=True)
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["a@client.example", "b@client.example"],
              "text": "x"},
    )
    mid = r.json()["id"]
    await env.rt.worker.run_once()
    admin = await browser(env, "boss@acme.example")
    page = await admin.get("/admin/queue", params={"view": "deferred"})
    assert page.status_code == 200
    assert page.text.count('class="queued-delivery"') == 2
    assert "451 4.3.0 try later" in page.text  # the last answer
    ds = {
        d["recipient"]: d["id"]
        for d in (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]
    }
    r = await post_form(
        admin, "/admin/queue", f"/admin/queue/{ds['b@client.example']}/purge", view="deferred"
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/queue?view=deferred"
    srv.rcpt_default = "250 2.1.5 OK"
    r = await post_form(admin, "/admin/queue", f"/admin/queue/{ds['a@client.example']}/retry")
    assert r.status_code == 303
    await env.drain()
    got = {
        d["recipient"]: d
        for d in (await acct.client.get(f"/api/v1/messages/{mid}")).json()["deliveries"]
    }
    assert got["a@client.example"]["state"] == "sent"
    assert got["a@client.example"]["events"][-2]["type"] == "retry-requested"
    assert got["b@client.example"]["state"] == "failed"
    assert got["b@client.example"]["reason"] == "purged"
    page = await admin.get("/admin/queue", params={"view": "failed"})
    assert 'data-recipient="b@client.example"' in page.text
    assert 'data-recipient="a@client.example"' not in page.text
    # purging a finished delivery is refused, in words
    r = await post_form(admin, "/admin/queue", f"/admin/queue/{ds['a@client.example']}/purge")
    assert r.status_code == 409


async def test_a_member_gets_403_on_every_admin_page_and_form(env, smtp_server):
    srv = await smtp_server(rcpt_default="451 4.3.0 try later")
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=True)
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["a@client.example"], "text": "x"},
    )
    await env.rt.worker.run_once()
    org = await _org_of(env, "boss@acme.example")
    await _suppress(env, org, "gone@client.example")
    await env.account("rep@acme.example")
    member = await browser(env, "rep@acme.example")
    boss_id = await user_id(env, "boss@acme.example")
    async with env.rt.db.session() as s, s.begin():
        delivery_id = await s.scalar(select(Delivery.id))
    assert len(ADMIN_PAGE_PATHS) == 6

    for path in ("/admin", *ADMIN_PAGE_PATHS):
        r = await member.get(path)
        assert r.status_code == 403, path
        assert "administrators" in r.text
    token = form_token(await member.get("/conversations"))  # the member's own valid token
    fields = {
        "role": "member",
        "email": "x@acme.example",
        "password": "long enough pw",
        "channel": "managed",
        "domains": "rival.example",
        "address": "gone@client.example",
        "smtp.batch_size": "1",
    }
    for path in ADMIN_FORM_PATHS:
        url = path.format(user_id=boss_id, delivery_id=delivery_id)
        r = await member.post(url, data={"csrf": token, **fields})
        assert r.status_code == 403, url
        assert "administrators" in r.text, url
    # and nothing changed
    admin = await browser(env, "boss@acme.example")
    assert (await admin.get("/admin/users")).status_code == 200
    assert "gone@client.example" in (await admin.get("/admin/suppressions")).text
    assert (await acct.client.get("/api/v1/throttle")).json()["channels"] is None
    assert (await acct.client.get("/api/v1/blocked-domains")).json()["domains"] == []


async def test_an_admin_sees_and_changes_only_their_own_organisation(env, smtp_server):
    srv = await smtp_server(rcpt_default="451 4.3.0 try later")
    acct, identity_id = await env.relay_sender(srv.port, "boss@acme.example", admin=True)
    await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["lead@client.example"], "text": "x"},
    )
    await env.rt.worker.run_once()
    org_a = await _org_of(env, "boss@acme.example")
    await _suppress(env, org_a, "gone@client.example")
    async with env.rt.db.session() as s, s.begin():
        await create_user(s, "chief@beta.example", PASSWORD, admin=True, org_name="Beta")
        delivery_id = await s.scalar(select(Delivery.id))
    other = await browser(env, "chief@beta.example")
    users = await other.get("/admin/users")
    assert "chief@beta.example" in users.text and "boss@acme.example" not in users.text
    assert "gone@client.example" not in (await other.get("/admin/suppressions")).text
    assert 'data-address="' not in (await other.get("/admin/suppressions")).text
    for view in ("waiting", "deferred", "failed"):
        page = await other.get("/admin/queue", params={"view": view})
        assert 'data-recipient="lead@client.example"' not in page.text
    boss_id = await user_id(env, "boss@acme.example")
    for action in ("deactivate", "reset-password"):
        r = await post_form(other, "/admin/users", f"/admin/users/{boss_id}/{action}")
        assert r.status_code == 404, action
    r = await post_form(other, "/admin/users", f"/admin/users/{boss_id}/role", role="member")
    assert r.status_code == 404
    for action in ("retry", "purge"):
        r = await post_form(other, "/admin/queue", f"/admin/queue/{delivery_id}/{action}")
        assert r.status_code == 404, action
    r = await post_form(
        other, "/admin/suppressions", "/admin/suppressions/lift", address="gone@client.example"
    )
    assert r.status_code == 404
    # org A is untouched
    admin = await browser(env, "boss@acme.example")
    assert "gone@client.example" in (await admin.get("/admin/suppressions")).text
    page = await admin.get("/admin/queue", params={"view": "deferred"})
    assert 'data-recipient="lead@client.example"' in page.text


@pytest.mark.parametrize("path", ADMIN_PAGE_PATHS)
async def test_admin_pages_need_a_login(env, path):
    r = await env.app_client.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_team_channel_set_on_the_page_carries_members_mail(env, smtp_server):
    srv = await smtp_server()
    await env.account("boss@acme.example", admin=True)
    member = await env.account("rep@acme.example")
    r = await member.client.post(
        "/api/v1/identities", json={"name": "Rep", "email": "rep@acme.example"}
    )
    identity_id = r.json()["id"]
    admin = await browser(env, "boss@acme.example")
    r = await post_form(admin, "/admin/channel", "/admin/channel", channel="gmail")
    assert r.status_code == 400
    relay = {"host": "127.0.0.1", "port": str(srv.port), "security": "none"}
    r = await post_form(admin, "/admin/channel", "/admin/channel", channel="smtp", **relay)
    assert r.status_code == 303, r.text
    r = await post_form(admin, "/admin/channel", "/admin/channel/test")
    assert r.status_code == 200 and "Connection works" in r.text
    view = (await member.client.get("/api/v1/delivery-channel")).json()
    assert view["channel"] == "smtp" and view["source"] == "team"
    r = await member.client.post(
        "/api/v1/messages",
        json={"identity_id": identity_id, "to": ["lead@client.example"], "text": "hi"},
    )
    await env.drain()
    d = (await member.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    assert d["state"] == "sent" and d["channel"] == "smtp"
    assert [t.rcpt_tos for t in srv.received] == [["lead@client.example"]]
