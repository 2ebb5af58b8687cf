"""A small client for the Google endpoints the Gmail channel uses: OAuth 2 (code + PKCE,
refresh, revoke), OpenID userinfo, and the Gmail API (send-as aliases, send, list, get).

Production code names Google's real hosts. `base_url` (POSTWAY_GOOGLE_BASE_URL) replaces the
scheme and host of every endpoint and keeps the real paths, so the same code runs against the
stand-in (`postway.google_standin`) in tests and in demo mode.

Every failure is a `GoogleError` subclass saying what the caller should do: wait (rate limit,
server error), pause the account (daily limit), ask the user to reconnect (auth), or give up on
this message (invalid request, too large). The httpx error, when there is one, is `__cause__`.
Tokens never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from postway.errors import PostwayError

AUTH_BASE = "https://accounts.google.com"
OAUTH_BASE = "https://oauth2.googleapis.com"
USERINFO_BASE = "https://openidconnect.googleapis.com"
GMAIL_BASE = "https://gmail.googleapis.com"
REAL_HOSTS = (
    "accounts.google.com",
    "oauth2.googleapis.com",
    "openidconnect.googleapis.com",
    "gmail.googleapis.com",
)

SCOPE_SEND = "https://www.googleapis.com/auth/gmail.send"
SCOPE_SETTINGS = "https://www.googleapis.com/auth/gmail.settings.basic"
SCOPE_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
OPENID_SCOPES = ("openid", "email")

MB = 1024 * 1024
SIMPLE_SEND_MAX = 5 * MB  # above this the message goes through the upload endpoint
GMAIL_MAX_MESSAGE = 25 * MB  # Gmail refuses larger messages
MAX_JSON_ANSWER = 1 * MB
MAX_RAW_ANSWER = 40 * MB  # a 25 MB message base64-encoded in JSON, with room to spare

_DAILY_WORDS = "daily user sending quota exceeded"
_RETRY_AFTER_IN_WORDS = re.compile(r"retry after (\d{4}-\d\d-\d\dT[0-9:.]+Z)", re.I)


# -- PKCE (RFC 7636) ------------------------------------------------------------------------------


def new_pkce_verifier() -> str:
    """A fresh code verifier: 64 characters from the unreserved set (43..128 allowed)."""
    return secrets.token_urlsafe(48)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # None on refresh: Google keeps the one issued at consent
    expires_at: datetime  # UTC
    scopes: tuple[str, ...]

    def __repr__(self) -> str:  # keep tokens out of logs and tracebacks
        return f"TokenSet(expires_at={self.expires_at.isoformat()}, scopes={self.scopes})"


@dataclass(frozen=True)
class SendAs:
    address: str
    verified: bool  # the primary address, or an alias whose verification was accepted
    is_default: bool
    display_name: str


@dataclass(frozen=True)
class SentMessage:
    id: str
    thread_id: str


# -- errors ---------------------------------------------------------------------------------------


class GoogleError(PostwayError):
    """Google (or the way to it) failed. `reason` is Google's machine reason when it gave one
    (e.g. "rateLimitExceeded", "invalid_grant"); `retry_after` is seconds to wait, if named."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class GoogleRateLimited(GoogleError):
    """Too many requests for now (429, rateLimitExceeded, userRateLimitExceeded): try later."""


class GoogleDailyLimit(GoogleError):
    """The account's daily sending quota is used up: pause it until the window passes."""


class GoogleAuthError(GoogleError):
    """The grant is gone or the token refused (401, invalid_grant, missing scopes): the user
    must reconnect the account."""


class GoogleInvalidRequest(GoogleError):
    """Google refused this request for good (e.g. an invalid recipient); its words say why."""


class GoogleServerError(GoogleError):
    """Google failed (5xx), or the network did (timeouts, resets): try later."""


class GoogleTooLarge(GoogleError):
    """The message is over Gmail's 25 MB limit (raised before anything is sent), or an answer
    is larger than this client reads."""


# -- the client -----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _retry_after_in_words(message: str, now: datetime) -> float | None:
    """Gmail's quota errors often say "Retry after 2024-05-01T12:00:00.000Z" in the message."""
    m = _RETRY_AFTER_IN_WORDS.search(message)
    if not m:
        return None
    try:
        when = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (when - now).total_seconds())


class GoogleApi:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        base_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self._base = base_url.rstrip("/") if base_url else None
        self._timeout = timeout
        # Each phase (connect, write, read) is bounded by `timeout`; the whole exchange by a
        # deadline too, so a server dripping bytes cannot hold a worker for ever.
        self._deadline = 4 * timeout
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"GoogleApi(client_id={self.client_id!r}, base_url={self._base!r})"

    def _url(self, real_base: str, path: str) -> str:
        return f"{self._base or real_base}{path}"

    # -- OAuth ----------------------------------------------------------------------------------

    def authorization_url(
        self,
        *,
        state: str,
        code_challenge: str,
        redirect_uri: str,
        scopes: Sequence[str],
        login_hint: str | None = None,
    ) -> str:
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "access_type": "offline",  # a refresh token
            "prompt": "consent",  # so a reconnect gets a fresh refresh token too
            "include_granted_scopes": "true",
        }
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self._url(AUTH_BASE, '/o/oauth2/v2/auth')}?{urlencode(params)}"

    async def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        return await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": redirect_uri,
            },
            refresh_token=None,
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            refresh_token=refresh_token,
        )

    async def _token_request(self, form: dict[str, str], *, refresh_token: str | None) -> TokenSet:
        form = {**form, "client_id": self.client_id, "client_secret": self._client_secret}
        now = datetime.now(UTC)
        body = await self._json(
            "POST", self._url(OAUTH_BASE, "/token"), data=form, step="token", oauth=True
        )
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise GoogleServerError("Google's token answer had no access token.")
        try:
            expires_in = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        scope = body.get("scope")
        new_refresh = body.get("refresh_token")
        return TokenSet(
            access_token=access,
            # Google sends a refresh token on exchange (offline access); on refresh it usually
            # does not, and the old one stays valid.
            refresh_token=new_refresh if isinstance(new_refresh, str) else refresh_token,
            expires_at=now + timedelta(seconds=expires_in),
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
        )

    async def revoke(self, token: str) -> None:
        """Revoke the grant (an access or refresh token revokes both). A token Google no longer
        knows (`invalid_token`) counts as revoked already."""
        try:
            await self._request(
                "POST",
                self._url(OAUTH_BASE, "/revoke"),
                data={"token": token},
                step="revoke",
                oauth=True,
                limit=MAX_JSON_ANSWER,
            )
        except GoogleError as e:
            if e.reason != "invalid_token":
                raise

    async def userinfo_email(self, access_token: str) -> str:
        body = await self._json(
            "GET", self._url(USERINFO_BASE, "/v1/userinfo"), token=access_token, step="userinfo"
        )
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise GoogleInvalidRequest("Google did not say which address this account has.")
        if body.get("email_verified") not in (True, "true"):
            raise GoogleInvalidRequest(f"Google has not verified the address {email}.")
        return email

    # -- Gmail ----------------------------------------------------------------------------------

    async def send_as(self, access_token: str) -> list[SendAs]:
        body = await self._json(
            "GET",
            self._url(GMAIL_BASE, "/gmail/v1/users/me/settings/sendAs"),
            token=access_token,
            step="send-as",
        )
        out: list[SendAs] = []
        for item in body.get("sendAs") or []:
            if not isinstance(item, dict) or not isinstance(item.get("sendAsEmail"), str):
                continue
            primary = item.get("isPrimary") is True
            out.append(
                SendAs(
                    address=item["sendAsEmail"],
                    # The primary address carries no verificationStatus; it is the account's own.
                    verified=primary or item.get("verificationStatus") == "accepted",
                    is_default=item.get("isDefault") is True,
                    display_name=str(item.get("displayName") or ""),
                )
            )
        return out

    async def send(
        self, access_token: str, raw: bytes, *, thread_id: str | None = None
    ) -> SentMessage:
        if len(raw) > GMAIL_MAX_MESSAGE:
            raise GoogleTooLarge(
                f"The message is {len(raw) / MB:.1f} MB; Gmail sends at most 25 MB "
                "(attachments included, before encoding)."
            )
        if len(raw) <= SIMPLE_SEND_MAX:
            payload: dict[str, str] = {"raw": _b64url(raw)}
            if thread_id:
                payload["threadId"] = thread_id
            body = await self._json(
                "POST",
                self._url(GMAIL_BASE, "/gmail/v1/users/me/messages/send"),
                token=access_token,
                json_body=payload,
                step="send",
            )
        elif thread_id is None:
            body = await self._json(
                "POST",
                self._url(GMAIL_BASE, "/upload/gmail/v1/users/me/messages/send"),
                params={"uploadType": "media"},
                token=access_token,
                content=raw,
                headers={"Content-Type": "message/rfc822"},
                step="send",
            )
        else:
            # A media upload carries no metadata; the thread id needs a multipart upload:
            # the JSON metadata part, then the message itself.
            boundary = f"postway-{uuid.uuid4().hex}"
            meta = json.dumps({"threadId": thread_id}).encode()
            content = b"".join(
                (
                    f"--{boundary}\r\n".encode(),
                    b"Content-Type: application/json; charset=UTF-8\r\n\r\n",
                    meta,
                    f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n".encode(),
                    raw,
                    f"\r\n--{boundary}--\r\n".encode(),
                )
            )
            body = await self._json(
                "POST",
                self._url(GMAIL_BASE, "/upload/gmail/v1/users/me/messages/send"),
                params={"uploadType": "multipart"},
                token=access_token,
                content=content,
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                step="send",
            )
        msg_id, thread = body.get("id"), body.get("threadId")
        if not isinstance(msg_id, str) or not isinstance(thread, str):
            raise GoogleServerError("Gmail accepted the message but did not name its id.")
        return SentMessage(id=msg_id, thread_id=thread)

    async def list_message_ids(
        self, access_token: str, *, query: str, page_token: str | None = None
    ) -> tuple[list[str], str | None]:
        params = {"q": query, "maxResults": "100"}
        if page_token:
            params["pageToken"] = page_token
        body = await self._json(
            "GET",
            self._url(GMAIL_BASE, "/gmail/v1/users/me/messages"),
            params=params,
            token=access_token,
            step="list",
        )
        ids = [
            m["id"]
            for m in body.get("messages") or []
            if isinstance(m, dict) and isinstance(m.get("id"), str)
        ]
        nxt = body.get("nextPageToken")
        return ids, nxt if isinstance(nxt, str) and nxt else None

    async def get_raw(self, access_token: str, message_id: str) -> bytes:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", message_id):
            raise GoogleInvalidRequest(f"{message_id!r} is not a Gmail message id.")
        body = await self._json(
            "GET",
            self._url(GMAIL_BASE, f"/gmail/v1/users/me/messages/{message_id}"),
            params={"format": "raw"},
            token=access_token,
            step="get",
            limit=MAX_RAW_ANSWER,
        )
        raw = body.get("raw")
        if not isinstance(raw, str):
            raise GoogleServerError("Gmail's answer had no raw message.")
        try:
            return _b64url_decode(raw)
        except ValueError as e:
            raise GoogleServerError("Gmail's raw message was not valid base64url.") from e

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- transport ------------------------------------------------------------------------------

    async def _json(self, method: str, url: str, *, limit: int = MAX_JSON_ANSWER, **kw: Any) -> Any:
        data = await self._request(method, url, limit=limit, **kw)
        try:
            body = json.loads(data)
        except ValueError as e:
            raise GoogleServerError(f"Google's answer to {kw['step']} was not JSON.") from e
        if not isinstance(body, dict):
            raise GoogleServerError(f"Google's answer to {kw['step']} was not a JSON object.")
        return body

    async def _request(
        self,
        method: str,
        url: str,
        *,
        step: str,
        limit: int,
        token: str | None = None,
        oauth: bool = False,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One exchange; returns the body of a 2xx answer, read up to `limit` bytes."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        request = self._http.build_request(
            method, url, params=params, data=data, json=json_body, content=content, headers=hdrs
        )
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._http.send(request, stream=True)
                try:
                    body = await self._read(response, limit, step)
                finally:
                    await response.aclose()
        except TimeoutError as e:
            raise GoogleServerError(f"Google did not finish answering {step} in time.") from e
        except httpx.TimeoutException as e:
            raise GoogleServerError(f"Google did not answer {step} in time.") from e
        except httpx.HTTPError as e:
            raise GoogleServerError(
                f"Could not reach Google for {step}: {type(e).__name__}."
            ) from e
        if 200 <= response.status_code < 300:
            return body
        raise self._error(response, body, step, oauth=oauth)

    @staticmethod
    async def _read(response: httpx.Response, limit: int, step: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # decoded bytes: a small gzip bomb is caught
            size += len(chunk)
            if size > limit:
                raise GoogleTooLarge(
                    f"Google's answer to {step} is larger than {limit // MB or 1} MB; not read.",
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _error(response: httpx.Response, body: bytes, step: str, *, oauth: bool) -> GoogleError:
        status = response.status_code
        now = datetime.now(UTC)
        reason: str | None = None
        words = ""
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            err = parsed.get("error")
            if isinstance(err, str):  # OAuth endpoints: {"error": "...", "error_description"}
                reason = err
                words = str(parsed.get("error_description") or err)
            elif isinstance(err, dict):  # Google APIs: {"error": {"code", "message", "errors"}}
                words = str(err.get("message") or "")
                details = err.get("errors")
                if isinstance(details, list) and details and isinstance(details[0], dict):
                    r = details[0].get("reason")
                    reason = r if isinstance(r, str) else None
                if reason is None:  # newer APIs: an ErrorInfo in "details", else the status
                    for d in err.get("details") or []:
                        if isinstance(d, dict) and isinstance(d.get("reason"), str):
                            reason = d["reason"]
                            break
                if reason is None and isinstance(err.get("status"), str):
                    reason = err["status"]
        words = words[:500] or response.reason_phrase or "no explanation"
        retry_after = _parse_retry_after(
            response.headers.get("Retry-After"), now
        ) or _retry_after_in_words(words, now)
        say = f"Google answered {status} to {step}: {words}"
        kw: dict[str, Any] = {"status": status, "reason": reason, "retry_after": retry_after}

        if reason == "dailyLimitExceeded" or _DAILY_WORDS in words.lower():
            return GoogleDailyLimit(say, **kw)
        if status == 429 or reason in ("rateLimitExceeded", "userRateLimitExceeded"):
            return GoogleRateLimited(say, **kw)
        if status >= 500 or status == 408:
            return GoogleServerError(say, **kw)
        if oauth and reason == "invalid_client":
            # Postway's own client id or secret is wrong: reconnecting would not help.
            return GoogleError(
                f"{say} (check POSTWAY_GOOGLE_CLIENT_ID and POSTWAY_GOOGLE_CLIENT_SECRET)", **kw
            )
        if status == 401 or reason in ("invalid_grant", "insufficientPermissions", "authError"):
            return GoogleAuthError(say, **kw)
        if reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT":
            return GoogleAuthError(say, **kw)
        if 400 <= status < 500:
            return GoogleInvalidRequest(say, **kw)
        return GoogleError(say, **kw)
