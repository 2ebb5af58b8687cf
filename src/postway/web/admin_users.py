"""Admin pages: the organisation's users (create, role, deactivate, reset password).

A password reset sets a new random password and shows it to the administrator once, on the
answer to the reset (never stored in a cookie or a link); the user's web sessions end."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from postway.errors import Forbidden, InvalidInput, NotFound, PostwayError
from postway.store import users
from postway.web.admin_kit import AdminForm, AdminPage, render_admin
from postway.web.deps import RuntimeDep
from postway.web.page_kit import error_words, redirect

router = APIRouter(include_in_schema=False)


async def _users_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[users.Principal, str],
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, _ = user
    async with rt.db.session() as s, s.begin():
        rows = await users.list_users(s, who.org_id)
    return render_admin(
        request,
        "admin_users.html",
        user,
        "users",
        status=status,
        users=[(u, users.is_active(u)) for u in rows],
        form=form or {"role": "member"},
        error=error,
        error_field=error_field,
    )


@router.get("/admin/users", response_class=HTMLResponse)
async def users_page(request: Request, user: AdminPage, rt: RuntimeDep) -> HTMLResponse:
    return await _users_page(request, rt, user)


@router.post("/admin/users", response_model=None)
async def create_user(
    request: Request,
    user: AdminForm,
    rt: RuntimeDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "member",
) -> Response:
    who, _ = user
    form = {"email": email, "role": role}
    try:
        if role not in ("member", "admin"):
            raise InvalidInput("role: choose member or administrator", field="role")
        shown = None
        if not password:  # none typed: make one and show it once, like a reset
            shown = password = users.random_password()
        async with rt.db.session() as s, s.begin():
            created = await users.create_user(
                s, email, password, admin=role == "admin", org_id=who.org_id
            )
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _users_page(
            request, rt, user, form=form, error=words, error_field=field, status=400
        )
    if shown is not None:
        return render_admin(
            request, "admin_password.html", user, "users", target=created.email, password=shown,
            created=True,
        )
    return redirect("/admin/users", f"Created {created.email}; they can log in now.")


def _status(exc: PostwayError) -> int:
    return 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 409


async def _change(user: tuple[users.Principal, str], rt: RuntimeDep, change: str, uid: str) -> str:
    who, _ = user
    async with rt.db.session() as s, s.begin():
        if change == "admin":
            u = await users.set_role(s, who.org_id, uid, admin=True)
            return f"{u.email} is now an administrator."
        if change == "member":
            u = await users.set_role(s, who.org_id, uid, admin=False)
            return f"{u.email} is now a member."
        if change == "deactivate":
            u = await users.deactivate_user(s, who.org_id, uid, who.user_id)
            return f"{u.email} is deactivated: no more logins, and their API tokens are revoked."
        u = await users.reactivate_user(s, who.org_id, uid)
        return f"{u.email} can log in again with their password (API tokens stay revoked)."


@router.post("/admin/users/{user_id}/role", response_model=None)
async def set_role(
    request: Request,
    user_id: str,
    user: AdminForm,
    rt: RuntimeDep,
    role: Annotated[str, Form()] = "",
) -> Response:
    if role not in ("admin", "member"):
        return await _users_page(
            request, rt, user, error="Role: choose member or administrator.", status=400
        )
    return await _act(request, rt, user, role, user_id)


@router.post("/admin/users/{user_id}/deactivate", response_model=None)
async def deactivate(request: Request, user_id: str, user: AdminForm, rt: RuntimeDep) -> Response:
    return await _act(request, rt, user, "deactivate", user_id)


@router.post("/admin/users/{user_id}/reactivate", response_model=None)
async def reactivate(request: Request, user_id: str, user: AdminForm, rt: RuntimeDep) -> Response:
    return await _act(request, rt, user, "reactivate", user_id)


async def _act(
    request: Request, rt: RuntimeDep, user: tuple[users.Principal, str], change: str, uid: str
) -> Response:
    try:
        done = await _change(user, rt, change, uid)
    except PostwayError as exc:
        return await _users_page(request, rt, user, error=str(exc), status=_status(exc))
    return redirect("/admin/users", done)


@router.post("/admin/users/{user_id}/reset-password", response_model=None)
async def reset_password(
    request: Request, user_id: str, user: AdminForm, rt: RuntimeDep
) -> Response:
    who, _ = user
    # argon2 in a thread, before the transaction: the database lock never waits on it
    password, hashed = await asyncio.to_thread(users.new_password)
    try:
        async with rt.db.session() as s, s.begin():
            target = await users.reset_password(s, who.org_id, user_id, hashed)
    except PostwayError as exc:
        return await _users_page(request, rt, user, error=str(exc), status=_status(exc))
    return render_admin(
        request, "admin_password.html", user, "users", target=target.email, password=password,
        created=False,
    )
