"""The Google client against the stand-in over loopback HTTP: every method, and every error
mapped to the class that tells the Gmail channel what to do."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from peers.google import ACCOUNT, GooglePeer
from postway.channels.google_api import (
    OPENID_SCOPES,
    SCOPE_READONLY,
    SCOPE_SEND,
    SCOPE_SETTINGS,
    GoogleApi,
    GoogleAuthError,
    GoogleDailyLimit,
    GoogleError,
    GoogleInvalidRequest,
    GoogleRateLimited,
    GoogleServerError,
    GoogleTooLarge,
    SendAs,
    TokenSet,
    new_pkce_verifier,
    pkce_challenge,
)
from postway.google_standin import Alias, Fault

REDIRECT = "http://127.0.0.1:8025/oauth/google/callback"  # never contacted: the test reads it
SCOPES = (SCOPE_SEND, *OPENID_SCOPES, SCOPE_SETTINGS, SCOPE_READONLY)
MB = 1024 * 1024


def message(subject: str = "Hello", *, to: str = "buyer@example.org", body: bytes = b"") -> bytes:
    return (
        f"From: Rep <{ACCOUNT}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Message-ID: <m1@postway.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + (body or b"Hi there.\r\n")


@pytest.fixture
def google() -> Iterator[GooglePeer]:
    aliases = (Alias("sales@example.com", "Sales"), Alias("pending@example.com", verified=False))
    with GooglePeer(auto_approve=True, aliases=aliases) as peer:
        yield peer


@pytest.fixture
async def api(google: GooglePeer) -> AsyncIterator[GoogleApi]:
    client = GoogleApi(
        client_id=google.client_id, client_secret=google.client_secret, base_url=google.base_url
    )
    yield client
    await client.aclose()


async def approve(api: GoogleApi, scopes: tuple[str, ...] = SCOPES) -> tuple[str, str]:
    """Open the authorization URL like a browser; returns (code, verifier)."""
    verifier = new_pkce_verifier()
    url = api.authorization_url(
        state="st-1", code_challenge=pkce_challenge(verifier), redirect_uri=REDIRECT, scopes=scopes
    )
    async with httpx.AsyncClient() as browser:
        r = await browser.get(url)
    assert r.status_code == 303
    back = urlsplit(r.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    query = dict(parse_qsl(back.query))
    assert query["state"] == "st-1"
    return query["code"], verifier


async def connect(api: GoogleApi, scopes: tuple[str, ...] = SCOPES) -> TokenSet:
    code, verifier = await approve(api, scopes)
    return await api.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)


# -- OAuth ----------------------------------------------------------------------------------------


def test_pkce_challenge_is_s256_of_the_verifier():
    # RFC 7636 appendix B
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    v = new_pkce_verifier()
    assert 43 <= len(v) <= 128 and v != new_pkce_verifier()


def test_authorization_url_asks_for_offline_consent_with_pkce():
    api = GoogleApi(client_id="cid", client_secret="secret")
    url = api.authorization_url(
        state="s", code_challenge="c", redirect_uri=REDIRECT, scopes=SCOPES, login_hint="a@b.c"
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "accounts.google.com",
                                                         "/o/oauth2/v2/auth")  # fmt: skip
    assert dict(parse_qsl(parts.query)) == {
        "client_id": "cid",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": " ".join(SCOPES),
        "state": "s",
        "code_challenge": "c",
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "login_hint": "a@b.c",
    }
    assert "secret" not in url


async def test_real_hosts_without_base_url():
    """Production names Google's hosts; the base URL only replaces scheme and host."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "a", "expires_in": 60})
        if request.url.path == "/v1/userinfo":
            return httpx.Response(200, json={"email": "x@gmail.com", "email_verified": True})
        if request.url.path.endswith("/send"):
            return httpx.Response(200, json={"id": "i", "threadId": "t"})
        return httpx.Response(200, json={"raw": "", "sendAs": []})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        api = GoogleApi(client_id="c", client_secret="s", http=http)
        await api.refresh("r")
        await api.revoke("t")
        await api.userinfo_email("t")
        await api.send_as("t")
        await api.send("t", b"To: a@b.c\r\n\r\nx")
        await api.send("t", b"To: a@b.c\r\n\r\n" + b"x" * (5 * MB + 1))
        await api.list_message_ids("t", query="in:inbox")
        await api.get_raw("t", "abc")
    assert seen == [
        "oauth2.googleapis.com/token",
        "oauth2.googleapis.com/revoke",
        "openidconnect.googleapis.com/v1/userinfo",
        "gmail.googleapis.com/gmail/v1/users/me/settings/sendAs",
        "gmail.googleapis.com/gmail/v1/users/me/messages/send",
        "gmail.googleapis.com/upload/gmail/v1/users/me/messages/send",
        "gmail.googleapis.com/gmail/v1/users/me/messages",
        "gmail.googleapis.com/gmail/v1/users/me/messages/abc",
    ]


async def test_exchange_code_sends_verifier_and_client_credentials(google, api):
    code, verifier = await approve(api)
    tokens = await api.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)
    (req,) = google.state.requests_to("/token")
    assert req.form() == {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
    }
    assert tokens.refresh_token and tokens.access_token
    assert SCOPE_SEND in tokens.scopes and SCOPE_READONLY in tokens.scopes
    assert timedelta(minutes=50) < tokens.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    # Tokens stay out of reprs (and so out of logs and tracebacks).
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)
    assert await api.userinfo_email(tokens.access_token) == ACCOUNT


async def test_pkce_mismatch_is_refused(api):
    code, _ = await approve(api)
    with pytest.raises(GoogleAuthError) as err:
        await api.exchange_code(code=code, code_verifier=new_pkce_verifier(), redirect_uri=REDIRECT)
    assert err.value.status == 400 and err.value.reason == "invalid_grant"
    assert "Invalid code verifier" in str(err.value)


async def test_a_code_works_once(api):
    code, verifier = await approve(api)
    await api.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)
    with pytest.raises(GoogleAuthError):
        await api.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)


async def test_wrong_client_secret_is_a_configuration_error_not_a_reconnect(google, api):
    code, verifier = await approve(api)
    bad = GoogleApi(client_id=google.client_id, client_secret="wrong", base_url=google.base_url)
    with pytest.raises(GoogleError) as err:
        await bad.exchange_code(code=code, code_verifier=verifier, redirect_uri=REDIRECT)
    await bad.aclose()
    assert type(err.value) is GoogleError
    assert err.value.reason == "invalid_client" and "POSTWAY_GOOGLE_CLIENT_SECRET" in str(err.value)
    assert "wrong" not in str(err.value)


async def test_refresh_gives_a_new_access_token_and_keeps_the_refresh_token(google, api):
    first = await connect(api)
    google.state.expire_access_tokens(ACCOUNT)
    with pytest.raises(GoogleAuthError) as err:
        await api.userinfo_email(first.access_token)
    assert err.value.status == 401
    assert first.access_token not in str(err.value)
    fresh = await api.refresh(first.refresh_token or "")
    assert fresh.access_token != first.access_token
    assert fresh.refresh_token == first.refresh_token
    assert fresh.scopes == first.scopes
    assert google.state.requests_to("/token")[-1].form()["grant_type"] == "refresh_token"
    assert await api.userinfo_email(fresh.access_token) == ACCOUNT


async def test_revoked_grant_needs_reconnect(google, api):
    tokens = await connect(api)
    google.state.revoke_grants(ACCOUNT)
    with pytest.raises(GoogleAuthError) as err:
        await api.refresh(tokens.refresh_token or "")
    assert err.value.reason == "invalid_grant"
    with pytest.raises(GoogleAuthError):
        await api.send(tokens.access_token, message())


async def test_revoke_ends_the_grant_and_is_idempotent(google, api):
    tokens = await connect(api)
    await api.revoke(tokens.refresh_token or "")
    assert google.state.requests_to("/revoke")[0].form() == {"token": tokens.refresh_token}
    assert google.state.live_grants(ACCOUNT) == []
    with pytest.raises(GoogleAuthError):
        await api.userinfo_email(tokens.access_token)
    await api.revoke(tokens.refresh_token or "")  # already revoked: not an error


# -- Gmail ----------------------------------------------------------------------------------------


async def test_send_as_lists_verified_aliases(api):
    tokens = await connect(api)
    assert await api.send_as(tokens.access_token) == [
        SendAs(ACCOUNT, verified=True, is_default=True, display_name="Rep"),
        SendAs("sales@example.com", verified=True, is_default=False, display_name="Sales"),
        SendAs("pending@example.com", verified=False, is_default=False, display_name=""),
    ]


async def test_send_posts_the_exact_message_with_the_bearer_token(google, api):
    tokens = await connect(api)
    raw = message()
    sent = await api.send(tokens.access_token, raw)
    (req,) = google.state.requests_to("/gmail/v1/users/me/messages/send")
    assert req.bearer == tokens.access_token
    body = req.json()
    assert set(body) == {"raw"}
    assert base64.urlsafe_b64decode(body["raw"] + "=" * (-len(body["raw"]) % 4)) == raw
    assert "=" not in body["raw"] and "+" not in body["raw"] and "/" not in body["raw"]
    filed = google.state.accounts[ACCOUNT].mailbox[-1]
    assert (filed.id, filed.thread_id, filed.labels, filed.raw) == (sent.id, sent.thread_id,
                                                                     {"SENT"}, raw)  # fmt: skip
    assert google.state.received_by("buyer@example.org") == [raw]


async def test_reply_keeps_the_thread(google, api):
    tokens = await connect(api)
    first = await api.send(tokens.access_token, message())
    reply = await api.send(tokens.access_token, message("Re: Hello"), thread_id=first.thread_id)
    assert reply.thread_id == first.thread_id and reply.id != first.id
    assert google.state.requests_to("/messages/send")[-1].json()["threadId"] == first.thread_id


async def test_above_5_mb_goes_through_media_upload(google, api):
    tokens = await connect(api)
    raw = message(body=b"x" * (5 * MB) + b"\r\n")
    sent = await api.send(tokens.access_token, raw)
    (req,) = google.state.requests_to("/upload/gmail/v1/users/me/messages/send")
    assert req.query == {"uploadType": "media"}
    assert req.headers["content-type"] == "message/rfc822"
    assert req.bearer == tokens.access_token
    assert req.body == raw
    assert google.state.accounts[ACCOUNT].mailbox[-1].id == sent.id


async def test_above_5_mb_in_a_thread_goes_through_multipart_upload(google, api):
    tokens = await connect(api)
    first = await api.send(tokens.access_token, message())
    raw = message("Re: Hello", body=b"y" * (5 * MB) + b"\r\n")
    reply = await api.send(tokens.access_token, raw, thread_id=first.thread_id)
    (req,) = google.state.requests_to("/upload/gmail/v1/users/me/messages/send")
    assert req.query == {"uploadType": "multipart"}
    assert req.headers["content-type"].startswith("multipart/related; boundary=")
    assert reply.thread_id == first.thread_id
    assert google.state.accounts[ACCOUNT].mailbox[-1].raw == raw


async def test_over_25_mb_is_refused_before_any_request(google, api):
    tokens = await connect(api)
    before = len(google.state.requests)
    with pytest.raises(GoogleTooLarge) as err:
        await api.send(tokens.access_token, message(body=b"z" * (25 * MB)))
    assert "25 MB" in str(err.value)
    assert len(google.state.requests) == before


async def test_invalid_recipient_carries_googles_words(api):
    tokens = await connect(api)
    with pytest.raises(GoogleInvalidRequest) as err:
        await api.send(tokens.access_token, message(to="not-an-address"))
    assert err.value.status == 400 and "Invalid To header" in str(err.value)


async def test_list_and_get_raw(google, api):
    tokens = await connect(api)
    bounce = b"From: mailer-daemon@googlemail.com\r\nSubject: Delivery Status Notification\r\n\r\nx"
    ids = [google.state.add_message(ACCOUNT, bounce) for _ in range(3)]
    google.state.add_message(ACCOUNT, b"From: friend@example.org\r\nSubject: lunch\r\n\r\nhi")
    found, nxt = await api.list_message_ids(tokens.access_token, query="from:mailer-daemon")
    assert sorted(found) == sorted(ids) and nxt is None
    assert google.state.requests_to("/messages")[-1].query["q"] == "from:mailer-daemon"
    assert await api.get_raw(tokens.access_token, ids[0]) == bounce


async def test_list_pages(google, api):
    tokens = await connect(api)
    for i in range(130):
        google.state.add_message(ACCOUNT, f"Subject: n{i}\r\n\r\n.".encode())
    first, token = await api.list_message_ids(tokens.access_token, query="")
    assert len(first) == 100 and token
    second, last = await api.list_message_ids(tokens.access_token, query="", page_token=token)
    assert len(second) == 30 and last is None and not set(first) & set(second)


async def test_reading_mail_needs_the_readonly_scope(api):
    tokens = await connect(api, scopes=(SCOPE_SEND, *OPENID_SCOPES))
    assert SCOPE_READONLY not in tokens.scopes
    with pytest.raises(GoogleAuthError) as err:
        await api.list_message_ids(tokens.access_token, query="")
    assert err.value.status == 403 and err.value.reason == "insufficientPermissions"


# -- errors ---------------------------------------------------------------------------------------

RETRY_DATE = "an HTTP date an hour ahead"  # made when the test runs, not when it is collected


@pytest.mark.parametrize(
    ("fault", "retry_after", "cls", "status", "reason"),
    [
        (Fault.RATE_LIMIT, "7", GoogleRateLimited, 429, "rateLimitExceeded"),
        (Fault.RATE_LIMIT, RETRY_DATE, GoogleRateLimited, 429, "rateLimitExceeded"),
        (Fault.RATE_LIMIT_403, None, GoogleRateLimited, 403, "rateLimitExceeded"),
        (Fault.USER_RATE_LIMIT, None, GoogleRateLimited, 403, "userRateLimitExceeded"),
        (Fault.DAILY_LIMIT, None, GoogleDailyLimit, 403, "dailyLimitExceeded"),
        (Fault.SENDING_QUOTA, None, GoogleDailyLimit, 429, "rateLimitExceeded"),
        (Fault.SERVER_ERROR, None, GoogleServerError, 500, "backendError"),
        (Fault.UNAVAILABLE, "3", GoogleServerError, 503, "backendError"),
        (Fault.INVALID_RECIPIENT, None, GoogleInvalidRequest, 400, "invalidArgument"),
        (Fault.UNAUTHORIZED, None, GoogleAuthError, 401, "authError"),
    ],
)
async def test_send_errors_are_mapped(google, api, fault, retry_after, cls, status, reason):
    tokens = await connect(api)
    if retry_after == RETRY_DATE:
        retry_after = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
        ahead = True
    else:
        ahead = False
    google.state.fail_next("send", fault, retry_after=retry_after)
    with pytest.raises(cls) as err:
        await api.send(tokens.access_token, message())
    e = err.value
    assert (type(e), e.status, e.reason) == (cls, status, reason)
    words = {Fault.SENDING_QUOTA: "Daily user sending quota exceeded",
             Fault.INVALID_RECIPIENT: "Invalid To header"}  # fmt: skip
    assert words.get(fault, "") in str(e)
    if retry_after == "7" or retry_after == "3":
        assert e.retry_after == float(retry_after)
    elif ahead:
        assert e.retry_after is not None and 3000 < e.retry_after <= 3600
    else:
        assert e.retry_after is None
    assert tokens.access_token not in str(e)
    # The fault was for one call only.
    assert (await api.send(tokens.access_token, message())).id


async def test_retry_after_in_googles_words(google, api):
    """Gmail's sending limit errors may name the time in the message instead of a header."""
    tokens = await connect(api)
    until = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    words = f"User-rate limit exceeded.  Retry after {until} (Mail sending)"
    google.state.fail_next("send", Fault.USER_RATE_LIMIT, message=words)
    with pytest.raises(GoogleRateLimited) as err:
        await api.send(tokens.access_token, message())
    assert err.value.retry_after is not None and 7000 < err.value.retry_after <= 7200
    assert until in str(err.value)


async def test_invalid_grant_at_refresh_needs_reconnect(google, api):
    tokens = await connect(api)
    google.state.fail_next("token", Fault.INVALID_GRANT)
    with pytest.raises(GoogleAuthError) as err:
        await api.refresh(tokens.refresh_token or "")
    assert err.value.reason == "invalid_grant"


async def test_server_error_at_token_endpoint_is_transient(google, api):
    tokens = await connect(api)
    google.state.fail_next("token", Fault.SERVER_ERROR, times=2)
    for _ in range(2):
        with pytest.raises(GoogleServerError):
            await api.refresh(tokens.refresh_token or "")
    assert (await api.refresh(tokens.refresh_token or "")).access_token


async def _serve_raw(answer: bytes | None) -> tuple[asyncio.Server, str]:
    """A loopback server that reads a request and writes `answer` (None: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            await asyncio.sleep(3600)
        writer.write(answer or b"")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_network_errors_are_transient_and_keep_the_cause():
    server, base = await _serve_raw(None)
    api = GoogleApi(client_id="c", client_secret="s", base_url=base, timeout=0.2)
    with pytest.raises(GoogleServerError) as err:
        await api.userinfo_email("secret-token")
    assert isinstance(err.value.__cause__, httpx.TimeoutException)
    assert "secret-token" not in str(err.value)
    server.close()
    await server.wait_closed()
    with pytest.raises(GoogleServerError) as err:
        await api.send_as("t")  # nothing listens any more
    assert isinstance(err.value.__cause__, httpx.ConnectError)
    await api.aclose()


async def test_answers_are_read_only_up_to_a_bound():
    huge = json.dumps({"email": "x" * (2 * MB)}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(huge)}\r\n"
    server, base = await _serve_raw(head.encode() + b"Connection: close\r\n\r\n" + huge)
    api = GoogleApi(client_id="c", client_secret="s", base_url=base)
    with pytest.raises(GoogleTooLarge):
        await api.userinfo_email("t")
    await api.aclose()
    server.close()
    await server.wait_closed()


async def test_garbage_answer_is_a_server_error():
    server, base = await _serve_raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<html"
    )
    api = GoogleApi(client_id="c", client_secret="s", base_url=base)
    with pytest.raises(GoogleServerError):
        await api.send_as("t")
    await api.aclose()
    server.close()
    await server.wait_closed()
