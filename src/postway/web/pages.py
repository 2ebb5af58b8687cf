"""Server-rendered web pages (Jinja2): login, the identity confirmation link, and the app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from postway.errors import AuthenticationFailed, NotFound, PostwayError
from postway.store.identities import confirm_verification
from postway.store.users import (
    Principal,
    authenticate_password,
    create_web_session,
    end_web_session,
)
from postway.web.deps import SESSION_COOKIE, RuntimeDep, page_caller

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)
PageUser = Annotated[tuple[Principal, str], Depends(page_caller)]


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status)


async def error_page(request: Request, exc: PostwayError) -> Response:
    if isinstance(exc, AuthenticationFailed):
        return RedirectResponse("/login", status_code=303)
    status = 404 if isinstance(exc, NotFound) else 400
    return render(request, "error.html", status=status, message=str(exc))


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html", error=None)


@router.post("/login", response_model=None)
async def login(
    request: Request,
    rt: RuntimeDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Response:
    try:
        async with rt.db.session() as s, s.begin():
            user = await authenticate_password(s, email, password)
            token, _ = await create_web_session(s, user)
    except AuthenticationFailed as exc:
        return render(request, "login.html", status=401, error=str(exc))
    resp = RedirectResponse("/", status_code=303)
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
async def logout(request: Request, rt: RuntimeDep) -> RedirectResponse:
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


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, user: PageUser) -> HTMLResponse:
    who, csrf = user
    return render(request, "home.html", who=who, csrf=csrf)
