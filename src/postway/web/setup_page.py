"""First run in the browser: the one-time setup link (see `postway.setup_token`) opens a form
that creates the first administrator and their organisation. After that the link is dead."""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from postway import setup_token
from postway.domain.addresses import normalize_address
from postway.errors import Conflict, InvalidInput, PostwayError
from postway.runtime import Runtime
from postway.security import sign
from postway.store.users import check_password, count_users, create_user
from postway.web.deps import RuntimeDep
from postway.web.page_kit import error_words, redirect, render

router = APIRouter(include_in_schema=False)

SETUP_COOKIE = "postway_setup"
_PURPOSE = "setup-form-csrf"
_NONCE = re.compile(r"[A-Za-z0-9_-]{20,100}")
MAX_ORG_NAME = 200


def _form_token(rt: Runtime, nonce: str) -> str:
    return sign(rt.settings.resolved_secret_key(), _PURPOSE, nonce)


def _dead(request: Request) -> HTMLResponse:
    return render(request, "setup.html", status=404, dead=True)


async def _no_user_yet(rt: Runtime) -> bool:
    async with rt.db.session() as s, s.begin():
        return await count_users(s) == 0


def _form(
    request: Request,
    rt: Runtime,
    token: str,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The form, with a CSRF token bound to a cookie nonce (no session exists yet)."""
    nonce = request.cookies.get(SETUP_COOKIE, "")
    if not _NONCE.fullmatch(nonce):
        nonce = secrets.token_urlsafe(24)
    resp = render(
        request,
        "setup.html",
        status=status,
        dead=False,
        token=token,
        setup_csrf=_form_token(rt, nonce),
        form=form or {},
        error=error,
        error_field=error_field,
    )
    resp.set_cookie(
        SETUP_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=rt.public_url.startswith("https://"),
        path="/setup",
        max_age=3600,
    )
    return resp


@router.get("/setup/{token}", response_class=HTMLResponse)
async def setup_form(request: Request, token: str, rt: RuntimeDep) -> HTMLResponse:
    if not setup_token.is_valid(rt.settings.data_dir, token) or not await _no_user_yet(rt):
        return _dead(request)
    return _form(request, rt, token)


@router.post("/setup/{token}", response_model=None)
async def create_first_admin(
    request: Request,
    token: str,
    rt: RuntimeDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    password2: Annotated[str, Form()] = "",
    org_name: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    data_dir = rt.settings.data_dir
    if not setup_token.is_valid(data_dir, token) or not await _no_user_yet(rt):
        return _dead(request)
    form = {"email": email[:320], "org_name": org_name[:MAX_ORG_NAME]}
    nonce = request.cookies.get(SETUP_COOKIE, "")
    expected = _form_token(rt, nonce) if _NONCE.fullmatch(nonce) else ""
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return _form(
            request, rt, token, form=form, status=403,
            error="This form is out of date or did not come from Postway; fill it in again.",
        )
    try:
        # every check that can fail on what was typed runs before the link is used up
        normalize_address(email, field="email")
        check_password(password)
        if password != password2:
            raise InvalidInput("The two passwords differ; type the same one twice.", "password2")
        name = org_name.strip()
        if not name or len(name) > MAX_ORG_NAME or any(c in name for c in "\r\n\x00"):
            raise InvalidInput(
                f"Give your organisation's name (1 to {MAX_ORG_NAME} characters, one line).",
                field="org_name",
            )
    except PostwayError as exc:
        field, words = error_words(exc)
        return _form(
            request, rt, token, form=form, error=words, error_field=field, status=400
        )
    if not setup_token.consume(data_dir, token):
        return _dead(request)
    try:
        async with rt.db.session() as s, s.begin():
            if await count_users(s):
                raise Conflict("a user exists already")
            user = await create_user(s, email, password, admin=True, org_name=name)
            created = user.email
    except Conflict:
        return _dead(request)
    resp = redirect("/login", f"Welcome: {created} is your organisation's administrator. Log in.")
    resp.delete_cookie(SETUP_COOKIE, path="/setup")
    return resp
