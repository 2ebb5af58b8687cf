"""Connecting a Gmail account through the stand-in, choosing it, and disconnecting."""

from __future__ import annotations

import httpx
from gmail_support import auth_params, connect, gmail_sender, sent_raws
from sqlalchemy import func, select

from postway.channels.google_api import pkce_challenge
from postway.store.models import ConnectedAccount, OAuthState


async def test_connect_uses_pkce_and_client_credentials_and_stores_tokens_encrypted(genv, google):
    acct = await genv.account("ada@acme.example")
    r = await acct.client.get(
        "/api/v1/delivery-channel/gmail/connect", params={"bounce_scanning": "true"}
    )
    url = r.json()["authorization_url"]
    p = auth_params(url)
    assert url.startswith(google.base_url + "/o/oauth2/v2/auth?")
    assert p["code_challenge_method"] == "S256" and p["access_type"] == "offline"
    assert p["redirect_uri"] == "http://postway.test/oauth/google/callback"
    assert "https://www.googleapis.com/auth/gmail.readonly" in p["scope"].split()
    # a flow started without bounce scanning does not ask to read the mailbox
    r2 = await connect(acct, genv)
    assert r2.status_code == 303 and r2.headers["location"] == "/settings/channel"
    token_req = google.state.requests_to("/token")[-1].form()
    assert token_req["client_id"] == google.client_id
    assert token_req["client_secret"] == google.client_secret
    assert token_req["grant_type"] == "authorization_code"
    second = google.state.requests_to("/auth")[-1].query
    assert pkce_challenge(token_req["code_verifier"]) == second["code_challenge"]
    assert "https://www.googleapis.com/auth/gmail.readonly" not in second["scope"].split()

    view = (await acct.client.get("/api/v1/delivery-channel")).json()
    assert view["gmail"] == {
        "address": "rep@gmail.test",
        "status": "connected",
        "reason": None,
        "paused_until": None,
        "send_as": ["rep@gmail.test", "sales@acme.example"],
        "bounce_scanning": False,
    }
    async with genv.rt.db.session() as s:
        row = await s.scalar(select(ConnectedAccount))
        grant = google.state.live_grants("rep@gmail.test")[0]
        assert grant.refresh_token not in (row.refresh_token_enc or "")
        assert genv.rt.box.decrypt(row.refresh_token_enc) == grant.refresh_token
    assert "refresh" not in str(view["gmail"]) and "token" not in str(view["gmail"])


async def test_choosing_gmail_needs_a_connected_account(genv, google):
    acct = await genv.account("ada@acme.example")
    r = await acct.client.put("/api/v1/delivery-channel", json={"channel": "gmail"})
    assert r.status_code == 409 and "connect a Gmail account" in r.json()["error"]
    await connect(acct, genv)
    r = await acct.client.put("/api/v1/delivery-channel", json={"channel": "gmail"})
    assert r.status_code == 200 and r.json()["channel"] == "gmail"


async def test_state_is_single_use_and_bound_to_the_session_that_started_it(genv, google):
    acct = await genv.account("ada@acme.example")
    r = await acct.client.get("/api/v1/delivery-channel/gmail/connect")
    async with httpx.AsyncClient() as browser:
        back = (await browser.get(r.json()["authorization_url"])).headers["location"]
    path = back.split("postway.test", 1)[1]
    assert (await genv.app_client.get(path)).status_code == 303
    replay = await genv.app_client.get(path)
    assert replay.status_code == 404
    # a made-up state is refused the same way
    bogus = await genv.app_client.get("/oauth/google/callback?code=x&state=made-up")
    assert bogus.status_code == 404
    async with genv.rt.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OAuthState)) == 0


async def test_one_account_per_user_another_replaces_only_when_confirmed(genv, google):
    google.state.add_account("other@gmail.test")
    acct = await genv.account("ada@acme.example")
    await connect(acct, genv)
    r = await acct.client.get("/api/v1/delivery-channel/gmail/connect")
    assert r.status_code == 409 and "replace=true" in r.json()["error"]
    google.state.signed_in = "other@gmail.test"
    r = await connect(acct, genv, replace="true")
    assert r.status_code == 303
    view = (await acct.client.get("/api/v1/delivery-channel")).json()
    assert view["gmail"]["address"] == "other@gmail.test"
    async with genv.rt.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(ConnectedAccount)) == 1


async def test_disconnect_revokes_at_google_and_deletes_the_tokens(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", "ada@acme.example")
    assert google.state.live_grants("rep@gmail.test")
    r = await acct.client.delete("/api/v1/delivery-channel/gmail")
    assert r.status_code == 204
    assert len(google.state.requests_to("/revoke")) == 1
    assert google.state.live_grants("rep@gmail.test") == []
    async with genv.rt.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(ConnectedAccount)) == 0
    assert (await acct.client.get("/api/v1/delivery-channel")).json()["gmail"] is None
    assert (await acct.client.delete("/api/v1/delivery-channel/gmail")).status_code == 404
    # nothing is sent any more: new mail is refused while nothing is connected
    r = await acct.client.post(
        "/api/v1/messages", json={"identity_id": identity, "to": ["x@client.example"]}
    )
    assert r.status_code == 409
    assert sent_raws(google) == []
