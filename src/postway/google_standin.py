"""A stand-in for Google's OAuth and Gmail API endpoints, for demo mode and for tests.

It answers on Google's real paths (`/o/oauth2/v2/auth`, `/token`, `/revoke`, `/v1/userinfo`,
`/gmail/v1/...`, `/upload/gmail/v1/...`) so that Postway, with POSTWAY_GOOGLE_BASE_URL pointing
here, runs the same code it runs against Google. It behaves like Google where Postway can tell:

- OAuth 2 authorization code with PKCE (S256 only) and client credentials; a consent page with
  "Allow" and "Deny" (or `auto_approve`); refresh tokens; revoking a token revokes its grant.
- Gmail sends: JSON `raw`, media upload (`message/rfc822`) and multipart upload (JSON metadata
  with `threadId`, then the message). The sender's copy is filed with the SENT label; the From
  address is replaced by the account's own unless it is a verified send-as alias; recipients
  get the message without its Bcc header. A reply keeps the thread id it names.
- A recipient in `bounce_domains` gets nothing; instead a delivery status notification from
  mailer-daemon lands in the sender's INBOX, as Gmail does.
- `messages.list` returns the mailbox newest first and understands a subset of Gmail's search
  syntax: free words and "quoted phrases" (anywhere in the message), `from:`, `to:`,
  `subject:`, `after:`/`before:` (epoch seconds or YYYY/MM/DD, in UTC where Gmail uses
  Pacific time), `newer_than:`/`older_than:` (Nh, Nd, Nm, Ny), `in:`, `label:`, `is:unread`,
  `-negation`, `OR` and `{alternatives}`. Anything else is refused with 400, so a query the
  stand-in cannot judge is noticed instead of silently matching.

Test controls are plain methods on `GoogleStandIn` (the state): `fail_next` answers the next
calls of an endpoint with one of Google's errors, `revoke_grants` and `expire_access_tokens`
change grants behind Postway's back, `add_message` drops mail (e.g. a bounce) into a mailbox,
and `requests` records every request as it arrived (method, path, headers, body).
"""

from __future__ import annotations

import base64
import hashlib
import html
import inspect
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, getaddresses, make_msgid, parseaddr
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

SCOPE_SEND = "https://www.googleapis.com/auth/gmail.send"
SCOPE_SETTINGS = "https://www.googleapis.com/auth/gmail.settings.basic"
SCOPE_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
SCOPE_USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
_FULL = "https://mail.google.com/"
_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
_COMPOSE = "https://www.googleapis.com/auth/gmail.compose"
CAN_SEND = {SCOPE_SEND, _COMPOSE, _MODIFY, _FULL}
CAN_READ_SETTINGS = {SCOPE_SETTINGS, SCOPE_READONLY, _MODIFY, _FULL}
CAN_READ = {SCOPE_READONLY, _MODIFY, _FULL}
SCOPE_WORDS = {
    "openid": "Associate you with your personal info on Google",
    "email": "See your primary Google Account email address",
    SCOPE_USERINFO_EMAIL: "See your primary Google Account email address",
    SCOPE_SEND: "Send email on your behalf",
    SCOPE_SETTINGS: "See, edit, create, or change your email settings and filters in Gmail",
    SCOPE_READONLY: "View your email messages and settings",
}

DEMO_ACCOUNT = "demo@gmail.test"
DEMO_CLIENT_ID = "postway-demo.apps.googleusercontent.test"
DEMO_CLIENT_SECRET = "postway-demo-client-secret"  # noqa: S105 - the stand-in's published pair

MB = 1024 * 1024
MAX_UPLOAD = 35 * MB  # Gmail's documented limit of the upload endpoint
MAX_SIMPLE_BODY = 10 * MB  # JSON requests; a 5 MB message base64-encoded fits
MAX_MESSAGE = 25 * MB
CODE_SECONDS = 600.0

ENDPOINTS = ("token", "revoke", "userinfo", "send_as", "send", "list", "get")


class Fault(StrEnum):
    """Errors `fail_next` can answer with, each as Google words it."""

    RATE_LIMIT = "rate_limit"  # 429 rateLimitExceeded, with Retry-After
    RATE_LIMIT_403 = "rate_limit_403"  # 403 rateLimitExceeded
    USER_RATE_LIMIT = "user_rate_limit"  # 403 userRateLimitExceeded
    DAILY_LIMIT = "daily_limit"  # 403 dailyLimitExceeded
    SENDING_QUOTA = "sending_quota"  # 429 "Daily user sending quota exceeded." (reason: rate)
    SERVER_ERROR = "server_error"  # 500 backendError
    UNAVAILABLE = "unavailable"  # 503
    INVALID_RECIPIENT = "invalid_recipient"  # 400 invalidArgument "Invalid To header"
    UNAUTHORIZED = "unauthorized"  # 401 authError
    INVALID_GRANT = "invalid_grant"  # 400 {"error": "invalid_grant"} (OAuth form)


_FAULTS: dict[Fault, tuple[int, str, str]] = {
    Fault.RATE_LIMIT: (429, "rateLimitExceeded", "Too many concurrent requests for user."),
    Fault.RATE_LIMIT_403: (403, "rateLimitExceeded", "Rate Limit Exceeded"),
    Fault.USER_RATE_LIMIT: (403, "userRateLimitExceeded", "User Rate Limit Exceeded"),
    Fault.DAILY_LIMIT: (403, "dailyLimitExceeded", "Daily Limit Exceeded"),
    Fault.SENDING_QUOTA: (429, "rateLimitExceeded", "Daily user sending quota exceeded."),
    Fault.SERVER_ERROR: (500, "backendError", "Backend Error"),
    Fault.UNAVAILABLE: (503, "backendError", "The service is currently unavailable."),
    Fault.INVALID_RECIPIENT: (400, "invalidArgument", "Invalid To header"),
    Fault.UNAUTHORIZED: (
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
}


# -- state ----------------------------------------------------------------------------------------


@dataclass
class Alias:
    address: str
    display_name: str = ""
    verified: bool = True
    is_default: bool = False


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: set[str]
    internal_date: float  # seconds since the epoch


@dataclass
class Account:
    email: str
    display_name: str = ""
    aliases: list[Alias] = field(default_factory=list)
    mailbox: list[StoredMessage] = field(default_factory=list)

    def verified_senders(self) -> set[str]:
        return {self.email.lower()} | {a.address.lower() for a in self.aliases if a.verified}


@dataclass
class SentMail:
    """One accepted send, as Gmail delivered it (From possibly replaced, Bcc removed)."""

    account: str
    id: str
    thread_id: str
    recipients: tuple[str, ...]  # delivered to
    bounced: tuple[str, ...]  # in `bounce_domains`: a bounce went to the sender instead
    raw: bytes


@dataclass
class Grant:
    id: str
    account: str
    client_id: str
    scopes: tuple[str, ...]
    refresh_token: str
    revoked: bool = False


@dataclass
class _Code:
    account: str
    client_id: str
    redirect_uri: str
    challenge: str
    scopes: tuple[str, ...]
    expires_at: float
    used: bool = False


@dataclass
class _Access:
    grant_id: str
    expires_at: float


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("latin-1"), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _PendingFault:
    fault: Fault
    times: int
    retry_after: str | None
    message: str | None


SendHook = Callable[[SentMail], Awaitable[None] | None]


class GoogleStandIn:
    """Everything the stand-in knows. Safe to read and change from another thread than the
    one serving it (one lock)."""

    def __init__(
        self,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        redirect_uris: Iterable[str] = (),  # empty: any http(s) redirect URI is accepted
        token_lifetime: float = 3600.0,
        auto_approve: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris)
        self.token_lifetime = token_lifetime
        self.auto_approve = auto_approve
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.signed_in: str | None = None  # the browser's account; default: the first one
        self.withheld_scopes: set[str] = set()  # scopes the user unticks at consent
        self.bounce_domains: set[str] = set()
        self.on_send: SendHook | None = None
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMail] = []
        self.grants: dict[str, Grant] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Access] = {}
        self._faults: dict[str, list[_PendingFault]] = {}
        self._lock = threading.RLock()

    # -- test and demo controls ----------------------------------------------------------------

    def add_account(
        self, email: str, *, display_name: str = "", aliases: Iterable[Alias] = ()
    ) -> Account:
        with self._lock:
            account = Account(email=email, display_name=display_name, aliases=list(aliases))
            self.accounts[email.lower()] = account
            return account

    def fail_next(
        self,
        endpoint: str,
        fault: Fault,
        *,
        times: int = 1,
        retry_after: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` calls of `endpoint` (one of ENDPOINTS) with `fault`.
        `retry_after` is the Retry-After header verbatim (seconds or an HTTP date); a
        RATE_LIMIT without one says "30". `message` replaces Google's words."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        if retry_after is None and fault is Fault.RATE_LIMIT:
            retry_after = "30"
        with self._lock:
            pending = _PendingFault(fault, times, retry_after, message)
            self._faults.setdefault(endpoint, []).append(pending)

    def revoke_grants(self, email: str) -> None:
        """The user removed Postway's access in their Google account settings."""
        with self._lock:
            for g in self.grants.values():
                if g.account == email.lower():
                    g.revoked = True

    def expire_access_tokens(self, email: str) -> None:
        with self._lock:
            now = self.clock()
            for tok in self._access.values():
                if self.grants[tok.grant_id].account == email.lower():
                    tok.expires_at = min(tok.expires_at, now)

    def add_message(
        self,
        email: str,
        raw: bytes,
        *,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        thread_id: str | None = None,
    ) -> str:
        with self._lock:
            msg_id = secrets.token_hex(8)
            self.accounts[email.lower()].mailbox.append(
                StoredMessage(msg_id, thread_id or msg_id, raw, set(labels), self.clock())
            )
            return msg_id

    def live_grants(self, email: str) -> list[Grant]:
        with self._lock:
            return [g for g in self.grants.values() if g.account == email.lower() and not g.revoked]

    def received_by(self, address: str) -> list[bytes]:
        """Every message delivered to `address`, as it received it."""
        with self._lock:
            return [s.raw for s in self.sent if address.lower() in s.recipients]

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    # -- internals ------------------------------------------------------------------------------

    def _take_fault(self, endpoint: str) -> _PendingFault | None:
        with self._lock:
            queue = self._faults.get(endpoint)
            if not queue:
                return None
            head = queue[0]
            head.times -= 1
            if head.times <= 0:
                queue.pop(0)
            return head

    def _issue(self, grant: Grant) -> dict[str, Any]:
        token = "ya29.standin-" + secrets.token_urlsafe(24)
        self._access[token] = _Access(grant.id, self.clock() + self.token_lifetime)
        return {
            "access_token": token,
            "expires_in": int(self.token_lifetime),
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }

    def _account_for_token(self, token: str | None, allowed: set[str] | None) -> Account | str:
        """The account a bearer token acts for, or what is wrong with it."""
        with self._lock:
            tok = self._access.get(token or "")
            if tok is None or tok.expires_at <= self.clock():
                return "invalid"
            grant = self.grants[tok.grant_id]
            if grant.revoked:
                return "invalid"
            if allowed is not None and not allowed.intersection(grant.scopes):
                return "scope"
            return self.accounts[grant.account]


# -- answers in Google's shapes -------------------------------------------------------------------


def _api_error(status: int, reason: str, message: str, retry_after: str | None = None) -> Response:
    statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": statuses.get(status, "UNKNOWN"),
        }
    }
    headers = {"Retry-After": retry_after} if retry_after else {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    return JSONResponse(body, status_code=status, headers=headers)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _fault_response(pending: _PendingFault) -> Response:
    if pending.fault is Fault.INVALID_GRANT:
        words = pending.message or "Token has been expired or revoked."
        return _oauth_error(400, "invalid_grant", words)
    status, reason, message = _FAULTS[pending.fault]
    return _api_error(status, reason, pending.message or message, pending.retry_after)


async def _enter(
    state: GoogleStandIn, request: Request, endpoint: str, limit: int = MAX_SIMPLE_BODY
) -> tuple[bytes, Response | None]:
    """Read and record the request; answer with a pending fault if one is due."""
    chunks: list[bytes] = []
    size = 0
    too_big = False
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_big = True
            break
        chunks.append(chunk)
    body = b"".join(chunks)
    with state._lock:
        state.requests.append(
            RecordedRequest(
                request.method,
                request.url.path,
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
    if too_big:
        return body, _api_error(
            413, "badRequest", f"Request payload size exceeds the limit: {limit} bytes."
        )
    pending = state._take_fault(endpoint)
    return body, (_fault_response(pending) if pending else None)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _authorize(
    state: GoogleStandIn, request: Request, allowed: set[str] | None
) -> Account | Response:
    user = request.path_params.get("user", "me")
    found = state._account_for_token(_bearer(request), allowed)
    if found == "invalid":
        return _api_error(401, "authError", _FAULTS[Fault.UNAUTHORIZED][2])
    if found == "scope":
        return _api_error(
            403, "insufficientPermissions", "Request had insufficient authentication scopes."
        )
    assert isinstance(found, Account)
    if user != "me" and user.lower() != found.email.lower():
        return _api_error(403, "forbidden", "Delegation denied for " + found.email)
    return found


# -- OAuth ----------------------------------------------------------------------------------------


def _error_page(status: int, code: str, words: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>Error {status}</title><h1>Error {status}: {html.escape(code)}"
        f"</h1><p>{html.escape(words)}</p>",
        status_code=status,
    )


def _redirect_with(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    parts = urlsplit(redirect_uri)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=303)


def _check_auth_request(state: GoogleStandIn, p: dict[str, str]) -> HTMLResponse | None:
    if p.get("client_id") != state.client_id:
        return _error_page(401, "invalid_client", "The OAuth client was not found.")
    uri = p.get("redirect_uri", "")
    registered = uri in state.redirect_uris if state.redirect_uris else (
        urlsplit(uri).scheme in ("http", "https") and bool(urlsplit(uri).netloc)
    )
    if not registered:
        return _error_page(400, "redirect_uri_mismatch", f"Unregistered redirect URI: {uri!r}.")
    if p.get("response_type") != "code":
        return _error_page(400, "invalid_request", "response_type must be code.")
    if not p.get("scope", "").split():
        return _error_page(400, "invalid_request", "Missing required parameter: scope")
    if p.get("code_challenge") and p.get("code_challenge_method") != "S256":
        return _error_page(400, "invalid_request", "The stand-in accepts only S256 challenges.")
    return None


def _choose_account(state: GoogleStandIn, p: dict[str, str]) -> Account | None:
    for candidate in (p.get("account"), p.get("login_hint"), state.signed_in):
        if candidate and candidate.lower() in state.accounts:
            return state.accounts[candidate.lower()]
    return next(iter(state.accounts.values()), None)


def _grant_code(state: GoogleStandIn, p: dict[str, str], account: Account) -> RedirectResponse:
    with state._lock:
        scopes = [s for s in p["scope"].split() if s not in state.withheld_scopes]
        if p.get("include_granted_scopes") == "true":
            for g in state.grants.values():
                if g.account == account.email.lower() and not g.revoked:
                    scopes += g.scopes
        # Google answers "email" as the userinfo.email scope.
        scopes = [SCOPE_USERINFO_EMAIL if s == "email" else s for s in scopes]
        code = "4/standin-" + secrets.token_urlsafe(24)
        state._codes[code] = _Code(
            account=account.email.lower(),
            client_id=p["client_id"],
            redirect_uri=p["redirect_uri"],
            challenge=p.get("code_challenge", ""),
            scopes=tuple(dict.fromkeys(scopes)),
            expires_at=state.clock() + CODE_SECONDS,
        )
    out = {"code": code, "scope": " ".join(dict.fromkeys(scopes))}
    if "state" in p:
        out["state"] = p["state"]
    return _redirect_with(p["redirect_uri"], out)


_PASSED_ON = (
    "client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge",
    "code_challenge_method", "access_type", "prompt", "include_granted_scopes", "login_hint",
)  # fmt: skip


def _consent_page(state: GoogleStandIn, p: dict[str, str], chosen: Account) -> HTMLResponse:
    e = html.escape
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{e(p[k])}">' for k in _PASSED_ON if k in p
    )
    options = "".join(
        f'<option value="{e(a.email)}"{" selected" if a is chosen else ""}>{e(a.email)}</option>'
        for a in state.accounts.values()
    )
    scopes = "".join(
        f"<li>{e(SCOPE_WORDS.get(s, s))}</li>" for s in dict.fromkeys(p["scope"].split())
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Google Accounts (stand-in)</title>
<link rel="stylesheet" href="consent.css"></head><body>
<p><strong>Google (stand-in)</strong>: nothing here talks to Google.</p>
<h1>Postway wants to access your Google Account</h1>
<form method="post" action="auth">{hidden}
<p><label>Account <select name="account">{options}</select></label></p>
<p>This will allow Postway to:</p><ul>{scopes}</ul>
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></body></html>"""
    return HTMLResponse(page)


# A stylesheet of its own, not an inline <style>: mounted in Postway's demo, the page is
# served under Postway's Content-Security-Policy (style-src 'self').
_CONSENT_CSS = """body { font-family: sans-serif; max-width: 32em; margin: 3em auto; }
button { font-size: 1em; padding: .5em 1.5em; margin-right: 1em; }
"""


async def _consent_css(request: Request) -> Response:
    return Response(_CONSENT_CSS, media_type="text/css")


async def _auth_page(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    body, _ = await _enter(state, request, "auth")
    if request.method == "POST":
        p = dict(parse_qsl(body.decode(), keep_blank_values=True))
    else:
        p = dict(request.query_params)
    refused = _check_auth_request(state, p)
    if refused is not None:
        return refused
    account = _choose_account(state, p)
    if account is None:
        return _error_page(400, "no_account", "The stand-in has no Google account to sign in.")
    if request.method == "POST":
        if p.get("decision") != "allow":
            return _redirect_with(
                p["redirect_uri"],
                {"error": "access_denied", **({"state": p["state"]} if "state" in p else {})},
            )
        return _grant_code(state, p, account)
    if state.auto_approve:
        return _grant_code(state, p, account)
    return _consent_page(state, p, account)


def _pkce_ok(challenge: str, verifier: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets.compare_digest(computed, challenge)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return "", ""
        return user, password
    return form.get("client_id", ""), form.get("client_secret", "")


async def _token(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    body, fault = await _enter(state, request, "token")
    if fault is not None:
        return fault
    form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    client_id, secret = _client_credentials(request, form)
    if client_id != state.client_id:
        return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if not secrets.compare_digest(secret, state.client_secret):
        return _oauth_error(401, "invalid_client", "Unauthorized")
    grant_type = form.get("grant_type")
    with state._lock:
        if grant_type == "authorization_code":
            code = state._codes.get(form.get("code", ""))
            if code is None or code.used or code.expires_at <= state.clock():
                return _oauth_error(400, "invalid_grant", "Malformed auth code.")
            if code.client_id != client_id or code.redirect_uri != form.get("redirect_uri"):
                return _oauth_error(400, "invalid_grant", "Bad Request")
            code.used = True
            if code.challenge:
                verifier = form.get("code_verifier")
                if not verifier:
                    return _oauth_error(400, "invalid_grant", "Missing code verifier.")
                if not _pkce_ok(code.challenge, verifier):
                    return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
            grant = Grant(
                id=secrets.token_hex(8),
                account=code.account,
                client_id=client_id,
                scopes=code.scopes,
                refresh_token="1//standin-" + secrets.token_urlsafe(32),
            )
            state.grants[grant.id] = grant
            return JSONResponse({**state._issue(grant), "refresh_token": grant.refresh_token})
        if grant_type == "refresh_token":
            wanted = form.get("refresh_token", "")
            for grant in state.grants.values():
                if secrets.compare_digest(grant.refresh_token, wanted) and not grant.revoked:
                    if grant.client_id != client_id:
                        return _oauth_error(400, "unauthorized_client", "Unauthorized")
                    return JSONResponse(state._issue(grant))
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
    return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + str(grant_type))


async def _revoke(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    body, fault = await _enter(state, request, "revoke")
    if fault is not None:
        return fault
    form = dict(parse_qsl(body.decode("latin-1")))
    token = form.get("token") or request.query_params.get("token", "")
    with state._lock:
        grant_id = None
        if token in state._access:
            grant_id = state._access[token].grant_id
        else:
            grant_id = next(
                (g.id for g in state.grants.values() if g.refresh_token == token), None
            )
        if grant_id is None or state.grants[grant_id].revoked:
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        state.grants[grant_id].revoked = True
    return Response(status_code=200)


async def _userinfo(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    _, fault = await _enter(state, request, "userinfo")
    if fault is not None:
        return fault
    account = _authorize(state, request, {"openid", SCOPE_USERINFO_EMAIL, "email"})
    if isinstance(account, Response):
        return account
    sub = str(int(hashlib.sha256(account.email.encode()).hexdigest()[:15], 16))
    return JSONResponse({"sub": sub, "email": account.email, "email_verified": True})


# -- Gmail ----------------------------------------------------------------------------------------


async def _send_as(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    _, fault = await _enter(state, request, "send_as")
    if fault is not None:
        return fault
    account = _authorize(state, request, CAN_READ_SETTINGS)
    if isinstance(account, Response):
        return account
    has_default = any(a.is_default for a in account.aliases)
    items: list[dict[str, Any]] = [
        {
            "sendAsEmail": account.email,
            "displayName": account.display_name,
            "replyToAddress": "",
            "signature": "",
            "isPrimary": True,
            "isDefault": not has_default,
            "treatAsAlias": False,
        }
    ]
    for a in account.aliases:
        items.append(
            {
                "sendAsEmail": a.address,
                "displayName": a.display_name,
                "replyToAddress": "",
                "signature": "",
                "isDefault": a.is_default,
                "treatAsAlias": True,
                "verificationStatus": "accepted" if a.verified else "pending",
            }
        )
    return JSONResponse({"sendAs": items})


def _split_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(metadata, message) from a multipart/related upload, byte-exact; None if malformed."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return None
    delim = b"--" + m.group(1).encode()
    pieces = body.split(b"\r\n" + delim)
    if not pieces[0].startswith(delim) or len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        return None
    parts = [pieces[0][len(delim) :], *pieces[1:-1]]
    meta: dict[str, Any] | None = None
    message: bytes | None = None
    for part in parts:
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            return None
        ctype = head.decode("latin-1").lower()
        if "application/json" in ctype:
            try:
                meta = json.loads(content or b"{}")
            except ValueError:
                return None
        elif "message/rfc822" in ctype:
            message = content
    if meta is None or message is None or not isinstance(meta, dict):
        return None
    return meta, message


_FROM_LINE = re.compile(rb"^From:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n", re.I | re.M)
_BCC_LINE = re.compile(rb"^Bcc:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n", re.I | re.M)


def _header_block(raw: bytes) -> tuple[bytes, bytes]:
    """(header lines with their last line end, the blank line and body)."""
    ends = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    if not ends:
        return raw, b""
    i, sep = min(ends)
    cut = i + len(sep) // 2
    return raw[:cut], raw[cut:]


def _with_sender(raw: bytes, account: Account) -> bytes:
    """Gmail keeps a verified send-as From and puts the account's own address otherwise."""
    head, rest = _header_block(raw)
    name, addr = parseaddr(
        str(BytesHeaderParser(policy=default_policy).parsebytes(head).get("From", ""))
    )
    if addr.lower() in account.verified_senders():
        return raw
    line = f"From: {formataddr((name or account.display_name, account.email))}\r\n".encode()
    found = _FROM_LINE.search(head)
    head = _FROM_LINE.sub(lambda _: line, head, count=1) if found else line + head
    return head + rest


def _without_bcc(raw: bytes) -> bytes:
    head, rest = _header_block(raw)
    return _BCC_LINE.sub(b"", head) + rest


def _bounce(account: Account, recipient: str, original: bytes, now: float) -> bytes:
    boundary = "standin-" + secrets.token_hex(8)
    date = format_datetime(datetime.fromtimestamp(now, UTC))
    head, _ = _header_block(original)
    text = (
        f"Address not found\r\n\r\nYour message wasn't delivered to {recipient} because the "
        "address couldn't be found, or is unable to receive mail.\r\n"
    )
    status = (
        "Reporting-MTA: dns; googlemail.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not "
        "exist. Please try double-checking the recipient's email address for typos or "
        "unnecessary spaces. (stand-in)\r\n"
    )
    return (
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        f"To: {account.email}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\n"
        f"Date: {date}\r\nMessage-ID: {make_msgid(domain='mx.google.com')}\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
        f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{text}"
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}"
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ).encode() + head + f"\r\n--{boundary}--\r\n".encode()


async def _send(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    upload = "/upload/gmail/" in request.url.path
    body, fault = await _enter(state, request, "send", MAX_UPLOAD if upload else MAX_SIMPLE_BODY)
    if fault is not None:
        return fault
    account = _authorize(state, request, CAN_SEND)
    if isinstance(account, Response):
        return account
    ctype = request.headers.get("content-type", "")
    thread_id: str | None = None
    if not upload:
        try:
            payload = json.loads(body)
            raw = base64.urlsafe_b64decode(payload["raw"] + "=" * (-len(payload["raw"]) % 4))
            thread_id = payload.get("threadId")
        except (ValueError, KeyError, TypeError):
            return _api_error(400, "invalidArgument", "'raw' RFC822 payload message string "
                              "or uploading message via /upload/* URL required")  # fmt: skip
    elif request.query_params.get("uploadType") == "media":
        if not ctype.lower().startswith("message/rfc822"):
            return _api_error(400, "badContent", f"Media type '{ctype}' is not supported.")
        raw = body
    elif request.query_params.get("uploadType") == "multipart":
        split = _split_multipart(ctype, body)
        if split is None:
            return _api_error(400, "badContent", "Malformed multipart body.")
        meta, raw = split
        thread_id = meta.get("threadId")
    else:
        return _api_error(400, "invalidArgument", "Invalid uploadType.")
    if len(raw) > MAX_MESSAGE:
        return _api_error(400, "invalidArgument", "Message too large.")
    headers = BytesHeaderParser(policy=default_policy).parsebytes(_header_block(raw)[0])
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for _, addr in getaddresses([str(v) for v in headers.get_all(name, [])]):
            local, at, domain = addr.rpartition("@")
            if not at or not local or "." not in domain:
                return _api_error(400, "invalidArgument", f"Invalid {name} header")
            recipients.append(addr.lower())
    if not recipients:
        return _api_error(400, "invalidArgument", "Recipient address required")

    with state._lock:
        now = state.clock()
        if thread_id and not any(m.thread_id == thread_id for m in account.mailbox):
            return _api_error(404, "notFound", "Requested entity was not found.")
        filed = _with_sender(raw, account)
        msg_id = secrets.token_hex(8)
        thread = thread_id or msg_id
        account.mailbox.append(StoredMessage(msg_id, thread, filed, {"SENT"}, now))
        delivered = _without_bcc(filed)
        bounced = tuple(
            r for r in dict.fromkeys(recipients) if r.rpartition("@")[2] in state.bounce_domains
        )
        delivered_to = tuple(r for r in dict.fromkeys(recipients) if r not in bounced)
        for r in bounced:
            bounce = _bounce(account, r, filed, now)
            account.mailbox.append(
                StoredMessage(secrets.token_hex(8), secrets.token_hex(8), bounce,
                              {"INBOX", "UNREAD"}, now)  # fmt: skip
            )
        for r in delivered_to:  # a stand-in account among the recipients gets it too
            if r in state.accounts and r != account.email.lower():
                state.accounts[r].mailbox.append(
                    StoredMessage(secrets.token_hex(8), secrets.token_hex(8), delivered,
                                  {"INBOX", "UNREAD"}, now)  # fmt: skip
                )
        sent = SentMail(account.email, msg_id, thread, delivered_to, bounced, delivered)
        state.sent.append(sent)
        hook = state.on_send
    if hook is not None:
        result = hook(sent)
        if inspect.isawaitable(result):
            await result
    return JSONResponse({"id": msg_id, "threadId": thread, "labelIds": ["SENT"]})


# -- search ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(\{|\}|-?[A-Za-z_]+:"[^"]*"|-?"[^"]*"|-?[^\s{}"]+)')
_UNITS = {"h": 3600, "d": 86400, "m": 31 * 86400, "y": 366 * 86400}


class _BadQuery(ValueError):
    pass


def _when(value: str) -> float:
    if value.isdigit():
        return float(value)
    m = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
    if not m:
        raise _BadQuery(value)
    return datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC).timestamp()


def _age(value: str) -> float:
    m = re.fullmatch(r"(\d+)([hdmy])", value.lower())
    if not m:
        raise _BadQuery(value)
    return int(m[1]) * _UNITS[m[2]]


def _atom(term: str, msg: StoredMessage, now: float) -> bool:
    negate = term.startswith("-")
    term = term.lstrip("-")
    key, colon, value = term.partition(":")
    value = value.strip('"').lower()
    text = msg.raw.decode("latin-1").lower()
    head = BytesHeaderParser(policy=default_policy).parsebytes(_header_block(msg.raw)[0])
    key = key.lower()
    if not colon or term.startswith('"'):
        hit = term.strip('"').lower() in text
    elif key in ("from", "subject"):
        hit = value in str(head.get(key, "")).lower()
    elif key == "to":
        hit = any(value in str(v).lower() for n in ("to", "cc", "bcc") for v in head.get_all(n, []))
    elif key in ("after", "before"):
        hit = (msg.internal_date >= _when(value)) == (key == "after")
    elif key in ("newer_than", "older_than"):
        hit = (msg.internal_date >= now - _age(value)) == (key == "newer_than")
    elif key == "in":
        hit = value == "anywhere" or value.upper() in msg.labels
    elif key == "label":
        hit = value.upper() in msg.labels
    elif key == "is" and value in ("unread", "read"):
        hit = ("UNREAD" in msg.labels) == (value == "unread")
    else:
        raise _BadQuery(term)
    return hit != negate


def _matches(query: str, msg: StoredMessage, now: float) -> bool:
    """Terms are ANDed; `a OR b` and `{a b}` are alternatives."""
    tokens = _TOKEN.findall(query)
    groups: list[list[str]] = []  # an AND of ORs
    pending_or = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "OR":
            if not groups or pending_or:
                raise _BadQuery(tok)
            pending_or = True
            i += 1
            continue
        if tok == "{":
            if "}" not in tokens[i:]:
                raise _BadQuery(tok)
            end = tokens.index("}", i)
            alts = [t for t in tokens[i + 1 : end] if t != "OR"]
            i = end + 1
        elif tok == "}":
            raise _BadQuery(tok)
        else:
            alts = [tok]
            i += 1
        if pending_or:
            groups[-1].extend(alts)
            pending_or = False
        else:
            groups.append(alts)
    if pending_or:
        raise _BadQuery("OR")
    return all(any(_atom(t, msg, now) for t in alts) for alts in groups)


async def _list(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    _, fault = await _enter(state, request, "list")
    if fault is not None:
        return fault
    account = _authorize(state, request, CAN_READ)
    if isinstance(account, Response):
        return account
    q = request.query_params.get("q", "")
    try:
        limit = max(1, min(500, int(request.query_params.get("maxResults", "100"))))
        start = int(request.query_params.get("pageToken") or 0)
        with state._lock:
            now = state.clock()
            order = sorted(
                enumerate(account.mailbox), key=lambda im: (im[1].internal_date, im[0])
            )
            newest_first = reversed(order)
            found = [m for _, m in newest_first if _matches(q, m, now)]
    except _BadQuery as e:
        return _api_error(400, "invalidArgument", f"Invalid search query (stand-in): {e}")
    except ValueError:
        return _api_error(400, "invalidArgument", "Invalid pageToken or maxResults.")
    page = found[start : start + limit]
    body: dict[str, Any] = {"resultSizeEstimate": len(found)}
    if page:
        body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
    if start + limit < len(found):
        body["nextPageToken"] = str(start + limit)
    return JSONResponse(body)


async def _get(request: Request) -> Response:
    state: GoogleStandIn = request.app.state.google
    _, fault = await _enter(state, request, "get")
    if fault is not None:
        return fault
    account = _authorize(state, request, CAN_READ)
    if isinstance(account, Response):
        return account
    fmt = request.query_params.get("format", "full")
    if fmt not in ("raw", "minimal"):
        return _api_error(400, "invalidArgument", "The stand-in serves format=raw and minimal.")
    with state._lock:
        msg = next((m for m in account.mailbox if m.id == request.path_params["id"]), None)
    if msg is None:
        return _api_error(404, "notFound", "Requested entity was not found.")
    body = {
        "id": msg.id,
        "threadId": msg.thread_id,
        "labelIds": sorted(msg.labels),
        "sizeEstimate": len(msg.raw),
        "internalDate": str(int(msg.internal_date * 1000)),
    }
    if fmt == "raw":
        body["raw"] = base64.urlsafe_b64encode(msg.raw).decode()
    return JSONResponse(body)


# -- the app --------------------------------------------------------------------------------------


def create_app(state: GoogleStandIn) -> Starlette:
    """The stand-in as an ASGI app; it may be served on its own or mounted under a prefix."""
    app = Starlette(
        routes=[
            Route("/o/oauth2/v2/auth", _auth_page, methods=["GET", "POST"]),
            Route("/o/oauth2/v2/consent.css", _consent_css, methods=["GET"]),
            Route("/token", _token, methods=["POST"]),
            Route("/revoke", _revoke, methods=["POST"]),
            Route("/v1/userinfo", _userinfo, methods=["GET", "POST"]),
            Route("/gmail/v1/users/{user}/settings/sendAs", _send_as, methods=["GET"]),
            Route("/gmail/v1/users/{user}/messages/send", _send, methods=["POST"]),
            Route("/upload/gmail/v1/users/{user}/messages/send", _send, methods=["POST"]),
            Route("/gmail/v1/users/{user}/messages", _list, methods=["GET"]),
            Route("/gmail/v1/users/{user}/messages/{id}", _get, methods=["GET"]),
        ]
    )
    app.state.google = state
    return app


def demo_state(alias: str, *, alias_name: str = "") -> GoogleStandIn:
    """The demo's Google: one account, `demo@gmail.test`, with `alias` as a verified send-as
    alias; `bounce.test` recipients come back as bounces in its inbox."""
    state = GoogleStandIn()
    state.add_account(
        DEMO_ACCOUNT, display_name="Demo Gmail", aliases=[Alias(alias, alias_name, verified=True)]
    )
    state.bounce_domains.add("bounce.test")
    return state
