"""The demo's local inbox shows each user only the mail their organisation sent (their
confirmation mails included); another organisation's item is not found."""

from __future__ import annotations

import asyncio
import re
import smtplib

import httpx
from integration_support import make_settings
from web_login import web_login

from postway.demo import LocalInbox
from postway.runtime import Runtime
from postway.store.identities import mark_verified
from postway.store.users import create_token, create_user
from postway.web.app import create_app

PASSWORD = "correct horse battery"


async def _drain(rt: Runtime) -> None:
    idle = 0
    while idle < 3:
        idle = idle + 1 if await rt.worker.run_once() == 0 else 0
        await asyncio.sleep(0.05)


def _item_ids(page: httpx.Response) -> set[str]:
    assert page.status_code == 200, page.text
    return set(re.findall(r'href="/inbox/([0-9a-f]+)"', page.text))


async def test_demo_inbox_is_scoped_to_the_sending_organisation(tmp_path, database_url, tls_peer):
    inbox = LocalInbox(tmp_path / "inbox")
    await inbox.start()
    route = f"*=127.0.0.1:{inbox.port}"
    settings = make_settings(tmp_path, database_url, tls_peer, transport=route)
    rt = Runtime(settings)
    rt.inbox = inbox
    await rt.start()
    transport = httpx.ASGITransport(app=create_app(rt))
    try:
        clients: dict[str, httpx.AsyncClient] = {}
        for email, org in (("ann@alpha.example", "Alpha"), ("bea@beta.example", "Beta")):
            async with rt.db.session() as s, s.begin():
                user = await create_user(s, email, PASSWORD, org_name=org)
                token = await create_token(s, user)
            api = httpx.AsyncClient(
                transport=transport,
                base_url="http://postway.test",
                headers={"Authorization": f"Bearer {token}"},
            )
            clients[email] = api
            r = await api.post("/api/v1/identities", json={"name": org, "email": email})
            async with rt.db.session() as s, s.begin():
                await mark_verified(s, email)
            r = await api.post(
                "/api/v1/messages",
                json={
                    "identity_id": r.json()["id"],
                    "to": ["lead@client.example"],
                    "subject": f"{org} pricing",
                    "text": f"{org} private offer",
                },
            )
            assert r.status_code == 202, r.text
        # Bea asks for a confirmation link: a system mail sent for her organisation
        bea = clients["bea@beta.example"]
        r = await bea.post("/api/v1/identities", json={"name": "B", "email": "bea2@beta.example"})
        assert (await bea.post(f"/api/v1/identities/{r.json()['id']}/verify")).status_code == 202
        # and a stranger drops mail straight into the inbox's SMTP port: nobody's
        await asyncio.to_thread(_stranger_mail, inbox.port)
        await _drain(rt)
        assert len(inbox.items()) == 4

        pages: dict[str, httpx.Response] = {}
        webs: dict[str, httpx.AsyncClient] = {}
        for email in clients:
            web = httpx.AsyncClient(transport=transport, base_url="http://postway.test")
            assert (await web_login(web, email, PASSWORD)).status_code == 303
            webs[email], pages[email] = web, await web.get("/inbox")
        ann_page, bea_page = pages["ann@alpha.example"], pages["bea@beta.example"]
        assert "Alpha pricing" in ann_page.text
        for foreign in ("Beta pricing", "Confirm your sending address", "Stranger"):
            assert foreign not in ann_page.text
        assert "Beta pricing" in bea_page.text and "Confirm your sending address" in bea_page.text
        assert "Alpha pricing" not in bea_page.text and "Stranger" not in bea_page.text
        ann_items, bea_items = _item_ids(ann_page), _item_ids(bea_page)
        assert len(ann_items) == 1 and len(bea_items) == 2

        ann_web = webs["ann@alpha.example"]
        own = await ann_web.get(f"/inbox/{next(iter(ann_items))}")
        assert own.status_code == 200 and "Alpha private offer" in own.text
        for item in bea_items:
            r = await ann_web.get(f"/inbox/{item}")
            assert r.status_code == 404 and "verify/" not in r.text
        (stranger,) = {i.id for i in inbox.items()} - ann_items - bea_items
        for web in webs.values():
            assert (await web.get(f"/inbox/{stranger}")).status_code == 404
        for client in [*clients.values(), *webs.values()]:
            await client.aclose()
    finally:
        await rt.aclose()
        await inbox.aclose()


def _stranger_mail(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(
            "someone@elsewhere.example",
            ["lead@client.example"],
            b"From: someone@elsewhere.example\r\nSubject: Stranger\r\n\r\nhello\r\n",
        )
