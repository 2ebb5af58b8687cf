"""The channel page: connect Gmail from the browser (the flow bound to the browser's
session), see which From recipients get, and disconnect; compose says it before sending."""

from __future__ import annotations

import httpx
from web_login import form_token, web_login

from peers.google import ACCOUNT


async def test_connect_from_the_page_is_bound_to_the_browser_session(genv, google):
    acct = await genv.account("ada@acme.example")
    await acct.client.post("/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"})
    await acct.client.post(
        "/api/v1/identities", json={"name": "Sales", "email": "sales@acme.example"}
    )
    page = httpx.AsyncClient(transport=genv.app_client._transport, base_url="http://postway.test")
    async with page:
        r = await web_login(page, acct.email, "correct horse battery")
        assert r.status_code == 303, r.text
        before = await page.get("/settings/channel")
        assert 'id="gmail-connect"' in before.text and "Connect Gmail" in before.text
        start = await page.get("/settings/channel/gmail/connect")
        assert start.status_code == 303
        async with httpx.AsyncClient() as browser:
            back = (await browser.get(start.headers["location"])).headers["location"]
        path = back.split("postway.test", 1)[1]
        # the same link opened without the session that started it is refused (and used up)
        assert (await genv.app_client.get(path)).status_code == 404
        assert (await page.get(path)).status_code == 404

        start = await page.get("/settings/channel/gmail/connect")
        async with httpx.AsyncClient() as browser:
            back = (await browser.get(start.headers["location"])).headers["location"]
        done = await page.get(back.split("postway.test", 1)[1])
        assert done.status_code == 303 and done.headers["location"] == "/settings/channel"
        shown = await page.get("/settings/channel")
        assert f'id="gmail-address">{ACCOUNT}<' in shown.text
        # ada@ is no alias of the account: recipients see the account's address;
        # sales@ is a verified alias: it keeps its own
        assert f"<td>ada@acme.example</td><td>{ACCOUNT} " in shown.text
        assert "<td>sales@acme.example</td><td>sales@acme.example</td>" in shown.text
        assert 'value="gmail" disabled' not in shown.text

        token = form_token(shown)
        chosen = await page.post("/settings/channel", data={"channel": "gmail", "csrf": token})
        assert chosen.status_code == 303
        compose = await page.get("/compose")
        assert f"recipients see {ACCOUNT}" in compose.text

        gone = await page.post("/settings/channel/gmail/disconnect", data={"csrf": token})
        assert gone.status_code == 303
        assert google.state.live_grants(ACCOUNT) == []
        assert 'id="gmail-address"' not in (await page.get("/settings/channel")).text
