"""Server-rendered web pages (Jinja2): login, the identity confirmation link, conversations,
a message's history, and compose. Identities and the delivery channel live in
`pages_settings`, the Failed Deliveries tab in `pages_failed`, the parts that update
themselves in `pages_live`; shared plumbing in `page_kit`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from postway.delivery.submit import SendRequest, accept_message
from postway.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    NotFound,
    PostwayError,
    RateLimited,
    Unavailable,
)
from postway.store import messages as msgs
from postway.store.channel_settings import effective_setting
from postway.store.failures import FailureFilter
from postway.store.identities import confirm_verification, list_identities
from postway.store.users import Principal, end_web_session
from postway.web import pages_failed, pages_live, pages_settings
from postway.web.channel_choice import current_channel
from postway.web.deps import SESSION_COOKIE, RuntimeDep
from postway.web.gmail_view import from_by_channel
from postway.web.login_guard import LOGIN_COOKIE, check_login_form, log_in, login_form_token
from postway.web.page_kit import (
    FormUser,
    PageUser,
    error_words,
    page_number,
    redirect,
    render,
    split_addresses,
)

STATIC = Path(__file__).parent / "static"
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")
router = APIRouter(include_in_schema=False)
_PAGE_STATUS = ((NotFound, 404), (Forbidden, 403), (Conflict, 409))

__all__ = ["error_page", "render", "router"]


async def error_page(request: Request, exc: PostwayError) -> Response:
    if isinstance(exc, AuthenticationFailed):
        return RedirectResponse("/login", status_code=303)
    if isinstance(exc, RateLimited | Unavailable):
        code = 429 if isinstance(exc, RateLimited) else 503
        page = render(request, "error.html", status=code, message=str(exc))
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    status = next((code for kind, code in _PAGE_STATUS if isinstance(exc, kind)), 400)
    return render(request, "error.html", status=status, message=str(exc))


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    # Served here because the app mounts no static directory; only files directly inside it,
    # named plainly (a NUL or a path separator would otherwise reach the file system).
    if not _STATIC_NAME.fullmatch(name):
        raise NotFound("no such file")
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise NotFound(f"no file {name}")
    return FileResponse(path, headers={"Cache-Control": "max-age=300"})


# --- session --------------------------------------------------------------------------------


def _login_page(
    request: Request,
    rt: RuntimeDep,
    *,
    status: int = 200,
    error: str | None = None,
    email: str = "",
) -> HTMLResponse:
    """The login form with a fresh CSRF token bound to a cookie (see `login_guard`)."""
    nonce, token = login_form_token(rt, request)
    resp = render(
        request, "login.html", status=status, error=error, email=email[:320], login_csrf=token
    )
    resp.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=rt.public_url.startswith("https://"),
        path="/login",
        max_age=86400,
    )
    return resp


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, rt: RuntimeDep) -> HTMLResponse:
    return _login_page(request, rt)


@router.post("/login", response_model=None)
async def login(
    request: Request,
    rt: RuntimeDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    try:
        check_login_form(rt, request, csrf)
        client = request.client.host if request.client else None
        token = await log_in(rt, email, password, client)
    except Forbidden as exc:
        return _login_page(request, rt, status=403, error=str(exc), email=email)
    except AuthenticationFailed as exc:
        return _login_page(request, rt, status=401, error=str(exc), email=email)
    except RateLimited as exc:
        page = _login_page(request, rt, status=429, error=str(exc), email=email)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    resp = RedirectResponse("/conversations", status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=rt.public_url.startswith("https://"),
        max_age=7 * 86400,
    )
    return resp


@router.post("/logout")
async def logout(request: Request, rt: RuntimeDep, user: FormUser) -> RedirectResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with rt.db.session() as s, s.begin():
            await end_web_session(s, token)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/verify/{token}", response_class=HTMLResponse)
async def verify(request: Request, token: str, rt: RuntimeDep) -> HTMLResponse:
    async with rt.db.session() as s, s.begin():
        identity = await confirm_verification(s, token)
    return render(request, "verified.html", identity=identity)


@router.get("/")
async def home(user: PageUser) -> RedirectResponse:
    return RedirectResponse("/conversations", status_code=303)


# --- conversations, failed deliveries, messages --------------------------------------------


@router.get("/conversations", response_class=HTMLResponse)
async def conversations(
    request: Request,
    user: PageUser,
    rt: RuntimeDep,
    tab: str = "",
    page: str = "",
    state: str = "",
    reason: str = "",
    channel: str = "",
    q: str = "",
) -> HTMLResponse:
    who, csrf = user
    number = page_number(page)
    if tab == "failed":
        filters = FailureFilter(state=state, reason=reason, channel=channel, address=q)
        return await pages_failed.failed_tab(request, rt, who, csrf, number, filters)
    ctx = await pages_live.conversations_context(rt, who, number)
    view = await current_channel(rt, who)
    return render(
        request,
        "conversations.html",
        who=who,
        csrf=csrf,
        nav="conversations",
        attention=view.setting.attention if view.setting else None,
        **ctx,
    )


@router.get("/conversations/{address}", response_class=HTMLResponse)
async def conversation(
    request: Request, address: str, user: PageUser, rt: RuntimeDep
) -> HTMLResponse:
    who, csrf = user
    async with rt.db.session() as s, s.begin():
        rows = await msgs.conversation(s, who, address)
    return render(
        request,
        "conversation.html",
        who=who,
        csrf=csrf,
        nav="conversations",
        address=rows[0][0].recipient,
        rows=rows,
    )


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message(
    request: Request, message_id: str, user: PageUser, rt: RuntimeDep
) -> HTMLResponse:
    who, csrf = user
    ctx = await pages_live.message_context(rt, who, message_id)
    return render(request, "message.html", who=who, csrf=csrf, nav="conversations", **ctx)


# --- compose --------------------------------------------------------------------------------


async def _compose_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    *,
    form: dict[str, str],
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, csrf = user
    async with rt.db.session() as s, s.begin():
        identities = await list_identities(s, who)
        # which channel each identity would send through, so the rep sees it before sending
        channels = {i.id: (await effective_setting(s, i))[0].value for i in identities}
        # and the From address its recipients will see on that channel (domain.sender)
        froms = {i.id: (await from_by_channel(s, i))[channels[i.id]] for i in identities}
    return render(
        request,
        "compose.html",
        status=status,
        who=who,
        csrf=csrf,
        nav="compose",
        identities=identities,
        channels=channels,
        froms=froms,
        form=form,
        error=error,
        error_field=error_field,
    )


@router.get("/compose", response_class=HTMLResponse)
async def compose_form(
    request: Request, user: PageUser, rt: RuntimeDep, to: str = ""
) -> HTMLResponse:
    return await _compose_page(request, rt, user, form={"to": to})


@router.post("/compose", response_model=None)
async def compose(
    request: Request,
    user: FormUser,
    rt: RuntimeDep,
    identity_id: Annotated[str, Form()] = "",
    to: Annotated[str, Form()] = "",
    cc: Annotated[str, Form()] = "",
    bcc: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
) -> Response:
    who, _ = user
    form = {"identity_id": identity_id, "to": to, "cc": cc, "bcc": bcc, "subject": subject}
    form["text"] = text
    if not identity_id:
        return await _compose_page(
            request,
            rt,
            user,
            form=form,
            status=400,
            error_field="identity_id",
            error="From: choose the identity to send as (add one under Identities first).",
        )
    req = SendRequest(
        identity_id=identity_id,
        to=split_addresses(to),
        cc=split_addresses(cc),
        bcc=split_addresses(bcc),
        subject=subject.strip(),
        text=text or None,
    )
    try:
        m, deliveries = await accept_message(rt.db, rt.settings, who, req)
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _compose_page(
            request, rt, user, form=form, status=400, error=words, error_field=field
        )
    # committed: the message is durable now, so the worker may pick it up
    rt.wake_worker()
    count = len(deliveries)
    return redirect(
        f"/messages/{m.id}", f"Queued for {count} recipient{'s' if count != 1 else ''}."
    )


router.include_router(pages_settings.router)
router.include_router(pages_failed.router)
router.include_router(pages_live.router)
