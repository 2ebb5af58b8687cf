"""Shared plumbing of the web pages: templates, the logged-in user, the CSRF check, one-shot
notices, and the plain words the pages use for states, reasons and form errors."""

from __future__ import annotations

import hmac
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from postway.domain.channel_guide import GUIDE
from postway.domain.reason_words import SENTENCES, describe
from postway.errors import Forbidden, PostwayError
from postway.store.users import Principal
from postway.web.deps import page_caller

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PageUser = Annotated[tuple[Principal, str], Depends(page_caller)]
NOTICE_COOKIE = "postway_notice"
PAGE_SIZE = 25

# The Content-Security-Policy and the other security headers are added to every response by
# `security_headers`; pages add only this: they show a user's mail and settings, so no copy
# is kept in the browser's or a proxy's cache.
PAGE_HEADERS = {"Cache-Control": "no-store"}

STATE_WORDS = {
    "queued": ("Queued", "waiting for its first attempt"),
    "deferred": ("Retrying", "the receiving server asked to try again later"),
    "delivered": ("Delivered", "accepted by the recipient's mail server"),
    "sent": ("Sent", "accepted by your mail server (Gmail or your relay) for delivery"),
    "bounced": ("Bounced", "the recipient's server refused or returned it"),
    "failed": ("Failed", "it could not be sent"),
    "suppressed": ("Not sent", "this address bounced before, so it is skipped"),
}

# Postway's own reasons (decided before or instead of sending). Bounce reasons, which name
# what a remote server said, are described by domain.reason_words.describe.
REASON_WORDS = {
    "blocked-domain": "the recipient's domain is on your organisation's blocked list",
    "suppressed": "this address bounced before, so Postway did not send to it",
    "channel-error": "the delivery channel could not be used",
    "channel-paused": "sending through your connected account is paused; it resumes by itself",
    "channel-disconnected": "your connected account needs to be reconnected; reconnect it on "
    "the channel page and the mail goes out",
    "throttled": "waiting for the mailbox's sending limit to allow it",
    "purged": "an administrator took it out of the queue",
}

FIELD_WORDS = {
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
    "subject": "Subject",
    "text": "Message",
    "name": "Name",
    "email": "Email address",
    "reply_to": "Reply-to",
    "signature": "Signature",
    "channel": "Channel",
    "identity_id": "From",
    "smtp": "SMTP server",
    "smtp.host": "Server name",
    "smtp.port": "Port",
    "smtp.security": "Security",
    "smtp.username": "Username",
    "smtp.password": "Password",
    "smtp.auth": "Login method",
    "password": "Password",
}

_INDEXED = re.compile(r"^(\w+)\[(\d+)\]")


def field_label(field: str) -> str:
    """`to[2]` -> `To, address 3`; known fields by their form label."""
    m = _INDEXED.match(field)
    if m:
        return f"{FIELD_WORDS.get(m.group(1), m.group(1))}, address {int(m.group(2)) + 1}"
    return FIELD_WORDS.get(field, field)


def error_words(exc: PostwayError) -> tuple[str | None, str]:
    """(form field, message) with the API's `field: ` prefix replaced by the form's label."""
    text = str(exc)
    field = getattr(exc, "field", None)
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"[\w.\[\]]+", head):
        field = field or head
        text = f"{field_label(head)}: {rest}"
    return (field.split("[", 1)[0] if field else None), text


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def reason_words(
    reason: str | None,
    status: str | None = None,
    hard: bool | None = None,
    diagnostic: str | None = None,
) -> str:
    """The reason in plain words: a bounce reason read together with its status and the
    server's words (a greylisting 4.7.1 is "try again later", not a block)."""
    if not reason:
        return ""
    if reason in SENTENCES:
        return describe(reason, bool(hard), status, diagnostic)
    return REASON_WORDS.get(reason, "")


def reason_label(reason: str | None) -> str:
    """A short name for a reason, for menus: what happened, without the advice."""
    if not reason:
        return ""
    if reason in SENTENCES:
        return SENTENCES[reason][0]
    return REASON_WORDS.get(reason, "")


def sentence(words: str) -> str:
    """Words as a sentence: first letter capital, a full stop at the end."""
    words = words.strip()
    if not words:
        return ""
    words = words[0].upper() + words[1:]
    return words if words[-1] in ".!?" else words + "."


templates.env.filters["when"] = when
templates.env.filters["reason_words"] = reason_words
templates.env.filters["reason_label"] = reason_label
templates.env.filters["sentence"] = sentence
templates.env.globals["STATE_WORDS"] = STATE_WORDS
# short channel names for lists and menus (the guide's titles mark the default)
templates.env.globals["CHANNEL_NAMES"] = {
    str(c): g["title"].removesuffix(" (default)") for c, g in GUIDE.items()
}


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    notice = request.cookies.get(NOTICE_COOKIE)
    ctx.setdefault("notice", unquote(notice)[:300] if notice else None)
    # demo mode (`postway serve --demo`) has a local inbox worth a place in the menu
    rt = getattr(request.app.state, "runtime", None)
    ctx.setdefault("demo_inbox", getattr(rt, "inbox", None) is not None)
    resp = templates.TemplateResponse(request, name, ctx, status_code=status)
    resp.headers.update(PAGE_HEADERS)
    if notice:
        resp.delete_cookie(NOTICE_COOKIE)
    return resp


def render_fragment(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    """A part of a page (polled by `static/app.js`): no layout, and the one-shot notice is
    left for the next full page."""
    resp = templates.TemplateResponse(request, name, ctx)
    resp.headers.update(PAGE_HEADERS)
    return resp


def redirect(url: str, notice: str | None = None) -> RedirectResponse:
    """303 to a page (Post/Redirect/Get), carrying a one-shot notice to show there."""
    resp = RedirectResponse(url, status_code=303)
    if notice:
        resp.set_cookie(NOTICE_COOKIE, quote(notice), max_age=60, httponly=True, samesite="lax")
    return resp


async def form_caller(user: PageUser, csrf: Annotated[str, Form()] = "") -> tuple[Principal, str]:
    """The logged-in user of a form POST, refused unless the form carries the session's CSRF
    token: the session cookie alone would let another site post forms as the user."""
    who, expected = user
    if not csrf or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise Forbidden(
            "this form is out of date or did not come from Postway; reload the page and try again"
        )
    return who, expected


FormUser = Annotated[tuple[Principal, str], Depends(form_caller)]


def page_number(value: str | None) -> int:
    """`?page=` as a number from 1; anything else is page 1."""
    return int(value) if value and value.isdigit() and 0 < int(value) < 100_000 else 1


def pages_of(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def split_addresses(value: str) -> list[str]:
    """A comma- or semicolon-separated list as typed in a form, without empty entries."""
    return [a.strip() for a in re.split(r"[,;\n]", value) if a.strip()]
