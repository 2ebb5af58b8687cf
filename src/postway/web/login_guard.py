"""Logging in safely: the login form's CSRF token, throttling of failed attempts per account
and per client address, and argon2 run in a thread with no database transaction open."""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import Request

from postway.errors import AuthenticationFailed, Forbidden, RateLimited
from postway.runtime import Runtime
from postway.security import sign
from postway.store import login_throttle as throttle
from postway.store.models import User, utcnow
from postway.store.users import create_web_session, login_record, password_matches

LOGIN_COOKIE = "postway_login"
_PURPOSE = "login-form-csrf"
MAX_EMAIL = 320


_NONCE = re.compile(r"[A-Za-z0-9_-]{20,100}")


def _nonce_of(request: Request) -> str | None:
    value = request.cookies.get(LOGIN_COOKIE, "")
    return value if _NONCE.fullmatch(value) else None


def login_form_token(rt: Runtime, request: Request) -> tuple[str, str]:
    """(cookie nonce, form token) for the login form: the form carries an HMAC of a nonce
    kept in a cookie, which another site can neither read nor set alongside its own form."""
    nonce = _nonce_of(request) or secrets.token_urlsafe(24)
    return nonce, sign(rt.settings.resolved_secret_key(), _PURPOSE, nonce)


def _same_origin(rt: Runtime, request: Request) -> bool:
    """Browsers send Origin (and Sec-Fetch-Site) with form POSTs: one naming another site,
    or `null` (sandboxed frames, some redirects), is refused; a client sending neither is not
    a browser another site could drive."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    allowed = {request.headers.get("host", "").lower(), urlsplit(rt.public_url).netloc.lower()}
    return bool(netloc) and netloc in allowed


def check_login_form(rt: Runtime, request: Request, token: str) -> None:
    nonce = _nonce_of(request)
    expected = sign(rt.settings.resolved_secret_key(), _PURPOSE, nonce) if nonce else ""
    if not (
        _same_origin(rt, request)
        and expected
        and hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise Forbidden(
            "this login form is out of date or did not come from Postway; log in again here"
        )


def _locked_words(until_seconds: int, until: str) -> str:
    return (
        "Too many failed logins for this account or from your network. "
        f"Try again after {until} (in {until_seconds} seconds)."
    )


async def log_in(rt: Runtime, email: str, password: str, client_host: str | None) -> str:
    """Check a login and open a web session; returns the session cookie value.

    Raises RateLimited while the account or the client address is locked (even for the right
    password) and AuthenticationFailed for a wrong email or password, the two told apart by
    neither the answer nor its timing: an unknown email is counted and verified (against a
    dummy hash) like a known one. Argon2 runs in a thread between two short transactions, so
    neither the event loop nor SQLite's writer lock waits on it.
    """
    email = email.strip().lower()[:MAX_EMAIL]
    account_policy, address_policy = throttle.policies(rt.settings)
    account = throttle.account_key(email)
    address = (throttle.address_key(client_host), address_policy)
    now = utcnow()
    async with rt.db.session() as s, s.begin():
        locked = await throttle.begin_attempt(s, [(account, account_policy), address], now)
        record = None if locked else await login_record(s, email)
    if locked is not None:
        wait = max(1, int((locked - now).total_seconds() + 0.999))
        raise RateLimited(_locked_words(wait, locked.strftime("%H:%M:%S UTC")), retry_after=wait)

    ok = await asyncio.to_thread(password_matches, record[1] if record else None, password)

    if not ok or record is None:
        async with rt.db.session() as s, s.begin():
            window = timedelta(seconds=rt.settings.login_failure_window_seconds)
            await throttle.forget_stale(s, window, utcnow())
        raise AuthenticationFailed("wrong email or password")
    async with rt.db.session() as s, s.begin():
        await throttle.attempt_succeeded(s, account, address, utcnow())
        user = await s.get(User, record[0])
        if user is None:
            raise AuthenticationFailed("wrong email or password")
        token, _ = await create_web_session(s, user)
    return token
