"""The Google stand-in behaves as documented (it is the ground truth for the Gmail tests).

Spoken to with plain HTTP, not with Postway's client, so that a mistake in one is not hidden
by the same mistake in the other.
"""

from __future__ import annotations

import base64
import hashlib
import re
from email import message_from_bytes
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from peers.google import ACCOUNT, GooglePeer
from postway.bounces.parse import parse_bounce
from postway.channels.google_api import GoogleApi, new_pkce_verifier, pkce_challenge
from postway.google_standin import (
    DEMO_ACCOUNT,
    SCOPE_READONLY,
    SCOPE_SEND,
    SCOPE_USERINFO_EMAIL,
    Alias,
    Fault,
    GoogleStandIn,
    SentMail,
    create_app,
    demo_state,
)

REDIRECT = "http://127.0.0.1:8025/oauth/google/callback"
VERIFIER = "a-verifier-of-enough-length-for-rfc-7636-rules-0123456789"


def challenge(verifier: str = VERIFIER) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def auth_params(peer: GooglePeer, **extra: str) -> dict[str, str]:
    return {
        "client_id": peer.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"openid email {SCOPE_SEND} {SCOPE_READONLY}",
        "state": "xyz",
        "code_challenge": challenge(),
        "code_challenge_method": "S256",
        "access_type": "offline",
        **extra,
    }


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


async def token_for(peer: GooglePeer, http: httpx.AsyncClient) -> str:
    r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer))
    code = query_of(r.headers["location"])["code"]
    r = await http.post(
        f"{peer.base_url}/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER,
              "redirect_uri": REDIRECT, "client_id": peer.client_id,
              "client_secret": peer.client_secret},  # fmt: skip
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
def peer():
    aliases = (Alias("sales@example.com", "Sales"), Alias("unverified@example.com", verified=False))
    with GooglePeer(auto_approve=True, aliases=aliases) as p:
        yield p


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as c:
        yield c


# -- OAuth ----------------------------------------------------------------------------------------


async def test_consent_page_allow_and_deny(http):
    with GooglePeer() as peer:  # a person clicks
        r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer))
        assert r.status_code == 200
        assert 'value="allow"' in r.text and "Send email on your behalf" in r.text
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', r.text))
        assert form["code_challenge"] == challenge() and form["state"] == "xyz"
        action = re.search(r'<form method="post" action="([^"]+)"', r.text)
        target = httpx.URL(str(r.url)).join(action.group(1) if action else "")
        allow = await http.post(target, data={**form, "decision": "allow", "account": ACCOUNT})
        assert allow.status_code == 303
        back = query_of(allow.headers["location"])
        assert allow.headers["location"].startswith(REDIRECT + "?")
        assert back["state"] == "xyz" and back["code"]
        deny = await http.post(target, data={**form, "decision": "deny"})
        assert query_of(deny.headers["location"]) == {"error": "access_denied", "state": "xyz"}


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"redirect_uri": "javascript:alert(1)"}, 400, "redirect_uri_mismatch"),
        ({"code_challenge_method": "plain"}, 400, "S256"),
        ({"scope": ""}, 400, "scope"),
    ],
)
async def test_bad_authorization_requests_are_refused(peer, http, change, status, words):
    r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer, **change))
    assert r.status_code == status and words in r.text
    assert "location" not in r.headers


async def test_registered_redirect_uris_only():
    with GooglePeer(auto_approve=True, redirect_uris=[REDIRECT]) as peer:
        async with httpx.AsyncClient() as http:
            other = auth_params(peer, redirect_uri="https://evil.example/cb")
            r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=other)
            assert r.status_code == 400
            r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer))
            assert r.status_code == 303


async def test_token_endpoint_checks_pkce_client_and_redirect(peer, http):
    async def code() -> str:
        r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer))
        return query_of(r.headers["location"])["code"]

    base = {"grant_type": "authorization_code", "redirect_uri": REDIRECT}
    basic = httpx.BasicAuth(peer.client_id, peer.client_secret)
    cases = [
        ({}, basic, 400, "Missing code verifier."),
        ({"code_verifier": VERIFIER + "x"}, basic, 400, "Invalid code verifier."),
        ({"code_verifier": VERIFIER, "redirect_uri": REDIRECT + "2"}, basic, 400, "Bad Request"),
        ({"code_verifier": VERIFIER}, httpx.BasicAuth(peer.client_id, "nope"), 401, "Unauthorized"),
    ]
    for extra, auth, status, words in cases:
        r = await http.post(f"{peer.base_url}/token", data={**base, "code": await code(), **extra},
                            auth=auth)  # fmt: skip
        assert (r.status_code, r.json()["error_description"]) == (status, words)
    good = {**base, "code": await code(), "code_verifier": VERIFIER}
    r = await http.post(f"{peer.base_url}/token", data=good, auth=basic)
    body = r.json()
    assert r.status_code == 200 and body["refresh_token"] and body["token_type"] == "Bearer"
    # Google names the "email" scope by its URL.
    assert body["scope"].split() == ["openid", SCOPE_USERINFO_EMAIL, SCOPE_SEND, SCOPE_READONLY]


async def test_withheld_scopes_are_not_granted(peer, http):
    peer.state.withheld_scopes.add(SCOPE_READONLY)
    r = await http.get(f"{peer.base_url}/o/oauth2/v2/auth", params=auth_params(peer))
    assert SCOPE_READONLY not in query_of(r.headers["location"])["scope"]


async def test_api_needs_a_live_bearer_token(peer, http):
    r = await http.get(f"{peer.base_url}/v1/userinfo")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    token = await token_for(peer, http)
    r = await http.get(f"{peer.base_url}/v1/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["email"] == ACCOUNT and r.json()["email_verified"] is True
    peer.state.expire_access_tokens(ACCOUNT)
    r = await http.get(f"{peer.base_url}/v1/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


# -- Gmail ----------------------------------------------------------------------------------------


async def test_send_delivers_like_gmail(peer, http):
    """From is kept only for a verified alias; Bcc reaches its recipient but nobody sees it;
    the sender's copy (with Bcc) is filed under SENT."""
    token = await token_for(peer, http)
    hooked: list[SentMail] = []
    peer.state.on_send = hooked.append

    def mail(sender: str) -> bytes:
        return (
            f"From: Someone <{sender}>\r\nTo: a@example.org\r\nCc: b@example.org\r\n"
            "Bcc: hidden@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
        ).encode()

    auth = {"Authorization": f"Bearer {token}"}
    url = f"{peer.base_url}/gmail/v1/users/me/messages/send"
    seen_from = []
    for sender in ("sales@example.com", "unverified@example.com", "stranger@example.net"):
        r = await http.post(url, json={"raw": b64(mail(sender))}, headers=auth)
        assert r.status_code == 200 and r.json()["labelIds"] == ["SENT"]
        seen_from.append(message_from_bytes(peer.state.received_by("a@example.org")[-1])["From"])
    assert seen_from == [
        "Someone <sales@example.com>",
        f"Someone <{ACCOUNT}>",
        f"Someone <{ACCOUNT}>",
    ]
    for rcpt in ("a@example.org", "b@example.org", "hidden@example.org"):
        got = peer.state.received_by(rcpt)
        assert len(got) == 3 and all(b"Bcc:" not in m and b"hidden@" not in m for m in got)
    filed = [m for m in peer.state.accounts[ACCOUNT].mailbox if "SENT" in m.labels]
    assert len(filed) == 3 and all(b"Bcc: hidden@example.org" in m.raw for m in filed)
    assert [s.id for s in hooked] == [s.id for s in peer.state.sent]
    assert hooked[0].recipients == ("a@example.org", "b@example.org", "hidden@example.org")


async def test_async_send_hook_and_unknown_thread(peer, http):
    token = await token_for(peer, http)
    called: list[str] = []

    async def hook(sent: SentMail) -> None:
        called.append(sent.thread_id)

    peer.state.on_send = hook
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{peer.base_url}/gmail/v1/users/me/messages/send"
    raw = b64(b"To: a@example.org\r\nSubject: x\r\n\r\nx")
    r = await http.post(url, json={"raw": raw, "threadId": "nope"}, headers=auth)
    assert r.status_code == 404
    r = await http.post(url, json={"raw": raw}, headers=auth)
    assert called == [r.json()["threadId"]]


async def test_bounce_domain_answers_with_a_dsn_in_the_sender_inbox(peer, http):
    peer.state.bounce_domains.add("bounce.test")
    token = await token_for(peer, http)
    raw = (
        f"From: {ACCOUNT}\r\nTo: gone@bounce.test, ok@example.org\r\nSubject: offer\r\n"
        "Message-ID: <orig-1@postway.test>\r\n\r\nhello\r\n"
    ).encode()
    await http.post(
        f"{peer.base_url}/gmail/v1/users/me/messages/send",
        json={"raw": b64(raw)},
        headers={"Authorization": f"Bearer {token}"},
    )
    (sent,) = peer.state.sent
    assert sent.recipients == ("ok@example.org",) and sent.bounced == ("gone@bounce.test",)
    (dsn,) = [m for m in peer.state.accounts[ACCOUNT].mailbox if "INBOX" in m.labels]
    assert b"Message-ID: <orig-1@postway.test>" in dsn.raw
    report = parse_bounce(dsn.raw)  # the project's own classifier reads it as a hard bounce
    assert report.kind == "bounce"
    (result,) = report.results
    assert (result.recipient, result.status, result.hard) == ("gone@bounce.test", "5.1.1", True)


async def test_search_subset():
    now = [1_700_000_000.0]
    with GooglePeer(auto_approve=True, clock=lambda: now[0]) as peer:
        add = peer.state.add_message
        old = add(ACCOUNT, b"From: mailer-daemon@googlemail.com\r\nSubject: Delivery failed\r\n"
                           b"\r\nold")  # fmt: skip
        now[0] += 3 * 86400
        dsn = add(ACCOUNT, b"From: mailer-daemon@googlemail.com\r\nSubject: Delivery Status "
                           b"Notification (Failure)\r\n\r\nAddress not found")  # fmt: skip
        chat = add(ACCOUNT, b"From: friend@example.org\r\nSubject: lunch\r\n\r\nsee you",
                   labels=("INBOX",))  # fmt: skip
        sent = add(ACCOUNT, b"From: rep@gmail.test\r\nTo: x@example.org\r\nSubject: offer\r\n\r\n.",
                   labels=("SENT",))  # fmt: skip
        async with httpx.AsyncClient() as http:
            token = await token_for(peer, http)

            async def ids(q: str) -> list[str] | int:
                r = await http.get(
                    f"{peer.base_url}/gmail/v1/users/me/messages",
                    params={"q": q},
                    headers={"Authorization": f"Bearer {token}"},
                )
                if r.status_code != 200:
                    return r.status_code
                return [m["id"] for m in r.json().get("messages", [])]

            assert await ids("") == [sent, chat, dsn, old]  # newest first
            assert await ids("from:mailer-daemon newer_than:1d") == [dsn]
            assert set(await ids(f"from:mailer-daemon after:{int(now[0]) - 86400 * 5}")) == {
                dsn, old}  # fmt: skip
            assert await ids(f"before:{int(now[0]) - 86400}") == [old]
            assert set(await ids("from:friend OR subject:offer")) == {chat, sent}
            assert set(await ids("{from:friend subject:offer} -in:sent")) == {chat}
            assert await ids('"address not found"') == [dsn]
            assert set(await ids("is:unread in:inbox")) == {old, dsn}
            assert await ids("has:attachment") == 400
            assert await ids("from:friend OR") == 400


async def test_fail_next_counts_down(peer, http):
    token = await token_for(peer, http)
    peer.state.fail_next("send_as", Fault.SERVER_ERROR, times=2)
    url = f"{peer.base_url}/gmail/v1/users/me/settings/sendAs"
    statuses = [
        (await http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    with pytest.raises(ValueError):
        peer.state.fail_next("nowhere", Fault.SERVER_ERROR)


async def test_rate_limit_fault_has_retry_after(peer, http):
    token = await token_for(peer, http)
    peer.state.fail_next("list", Fault.RATE_LIMIT)
    r = await http.get(f"{peer.base_url}/gmail/v1/users/me/messages",
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert r.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"


async def test_mounted_under_a_prefix_with_the_real_client():
    """Demo mode may mount the stand-in inside the web app: the client keeps the real paths
    under the base URL, and the consent form posts back to where it was served."""
    state = demo_state("demo@postway.test", alias_name="Demo Rep")
    outer = Starlette(routes=[Mount("/google", app=create_app(state))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        api = GoogleApi(client_id=state.client_id, client_secret=state.client_secret,
                        base_url="http://demo/google", http=http)  # fmt: skip
        verifier = new_pkce_verifier()
        url = api.authorization_url(
            state="s1",
            code_challenge=pkce_challenge(verifier),
            redirect_uri=REDIRECT,
            scopes=["openid", "email", SCOPE_SEND],
        )
        page = await http.get(url)
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        action = re.search(r'action="([^"]+)"', page.text)
        target = httpx.URL(url).join(action.group(1) if action else "")
        assert target.path == "/google/o/oauth2/v2/auth"
        r = await http.post(
            target,
            content=urlencode({**form, "decision": "allow"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        code = query_of(r.headers["location"])["code"]
        tokens = await api.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)
        assert await api.userinfo_email(tokens.access_token) == DEMO_ACCOUNT
        raw = b"From: Demo Rep <demo@postway.test>\r\nTo: x@bounce.test\r\n\r\nx"
        sent = await api.send(tokens.access_token, raw)
        assert state.sent[0].id == sent.id and state.sent[0].bounced == ("x@bounce.test",)
        assert state.requests[-1].path == "/google/gmail/v1/users/me/messages/send"


def test_state_is_plain_python():
    state = GoogleStandIn()
    state.add_account("a@gmail.test")
    msg_id = state.add_message("a@gmail.test", b"Subject: x\r\n\r\n.")
    assert state.accounts["a@gmail.test"].mailbox[0].id == msg_id
    assert state.live_grants("a@gmail.test") == []
