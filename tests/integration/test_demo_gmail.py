"""`postway serve --demo` as a real process: Gmail connected offline through the built-in
stand-in for Google (its consent page, "Allow"), mail sent through it lands in the local
inbox, and a bounce.test recipient comes back as a bounce found by scanning the mailbox."""

from __future__ import annotations

import asyncio
import html
import re
from urllib.parse import urljoin, urlsplit

import httpx
from test_cli import cli_env
from test_demo import demo_token, start_demo
from web_login import web_login

from peers.smtp import free_port

_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


async def _allow_on_consent_page(web: httpx.AsyncClient, url: str) -> httpx.Response:
    """What a person does on the stand-in's page: read it, click "Allow" (post its form)."""
    page = await web.get(url)
    assert page.status_code == 200, page.text
    assert "demo@gmail.test" in page.text and ">Allow</button>" in page.text
    # served by Postway under its Content-Security-Policy: nothing inline to be blocked
    assert not re.search(r"<style|<script|\sstyle=|\son[a-z]+=", page.text, re.I)
    form = {k: html.unescape(v) for k, v in _INPUT.findall(page.text)}
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text
    target = urljoin(str(page.url), action.group(1))
    assert urlsplit(target).netloc == urlsplit(url).netloc  # form-action 'self' allows it
    return await web.post(target, data={**form, "account": "demo@gmail.test", "decision": "allow"})


async def test_demo_connects_gmail_sends_to_the_inbox_and_finds_the_bounce(tmp_path):
    port = free_port()
    env = cli_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'demo.db'}",
        POSTWAY_LOG_LEVEL="WARNING",
        POSTWAY_GMAIL_POLL_SECONDS="0.5",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )
    proc = start_demo(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        token = await demo_token(proc)
        async with httpx.AsyncClient(base_url=base) as web:
            assert (await web_login(web, "demo@postway.test", "postway-demo")).status_code == 303
            start = await web.get("/settings/channel/gmail/connect?bounce_scanning=true")
            assert start.status_code == 303
            consent_url = start.headers["location"]
            assert consent_url.startswith(f"{base}/demo-google/o/oauth2/v2/auth?")
            allowed = await _allow_on_consent_page(web, consent_url)
            assert allowed.status_code == 303
            back = allowed.headers["location"]
            assert back.startswith(f"{base}/oauth/google/callback?")
            done = await web.get(back)
            assert (done.status_code, done.headers["location"].split("?")[0]) == (
                303,
                "/settings/channel",
            )
            channel_page = (await web.get("/settings/channel")).text
            assert "demo@gmail.test" in channel_page and "sales@postway.test" in channel_page

        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            gmail = (await api.get("/api/v1/delivery-channel")).json()["gmail"]
            assert (gmail["address"], gmail["status"], gmail["bounce_scanning"]) == (
                "demo@gmail.test",
                "connected",
                True,
            )
            r = await api.put("/api/v1/delivery-channel", json={"channel": "gmail"})
            assert r.status_code == 200, r.text
            identity = (await api.get("/api/v1/identities")).json()[0]
            identity = (await api.get(f"/api/v1/identities/{identity['id']}")).json()
            assert identity["effective_from"]["gmail"] == "demo@gmail.test"  # not an alias
            r = await api.post(
                "/api/v1/messages",
                json={
                    "identity_id": identity["id"],
                    "to": ["anna@client.example", "nobody@bounce.test"],
                    "subject": "Gmail demo hello",
                    "text": "Hello through Gmail",
                },
            )
            assert r.status_code == 202, r.text
            states: dict[str, dict[str, object]] = {}
            for _ in range(300):
                msg = (await api.get(f"/api/v1/messages/{r.json()['id']}")).json()
                states = {d["recipient"]: d for d in msg["deliveries"]}
                if states["nobody@bounce.test"]["state"] == "bounced":
                    break
                await asyncio.sleep(0.1)
            assert states["anna@client.example"]["state"] == "sent"
            bounced = states["nobody@bounce.test"]
            assert (bounced["state"], bounced["reason"], bounced["status"]) == (
                "bounced",
                "userunknown",
                "5.1.1",
            )
            failed = (await api.get("/api/v1/failed-deliveries")).json()["items"]
            assert [(i["recipient"], i["reason"]) for i in failed] == [
                ("nobody@bounce.test", "userunknown")
            ]
            events = (await api.get(f"/api/v1/messages/{r.json()['id']}/events")).json()
            # handed to Gmail first; the bounce came later, from the mailbox
            [found] = [e for e in events if e["type"] == "bounced"]
            assert found["detail"].get("source") == "mailbox", found
            assert any(e["type"] == "sent" and e["detail"].get("gmail_id") for e in events)

        async with httpx.AsyncClient(base_url=base) as web:
            assert (await web_login(web, "demo@postway.test", "postway-demo")).status_code == 303
            inbox = (await web.get("/inbox")).text
            assert "Gmail demo hello" in inbox and "anna@client.example" in inbox
            assert "demo@gmail.test" in inbox  # the From recipients saw
            assert "nobody@bounce.test" not in inbox
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
