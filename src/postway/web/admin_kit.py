"""Plumbing shared by the administrator's pages: who may open them, and how they render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from postway.errors import Forbidden
from postway.store.users import Principal
from postway.web.page_kit import FormUser, PageUser, render

# The sections of the admin area, in menu order: (section, path, title).
SECTIONS = (
    ("users", "/admin/users", "Users"),
    ("channel", "/admin/channel", "Team channel"),
    ("throttle", "/admin/throttle", "Throttling"),
    ("blocked", "/admin/blocked-domains", "Blocked domains"),
    ("suppressions", "/admin/suppressions", "Suppressions"),
    ("queue", "/admin/queue", "Queue"),
)

NOT_ADMIN = "this page is for administrators of your organisation"


def _admin_only(who: Principal) -> None:
    if not who.is_admin:
        raise Forbidden(NOT_ADMIN)


async def admin_page(user: PageUser) -> tuple[Principal, str]:
    """The logged-in administrator of a GET; a member gets 403."""
    _admin_only(user[0])
    return user


async def admin_form(user: FormUser) -> tuple[Principal, str]:
    """The administrator of a form POST, whose form carried the session's CSRF token."""
    _admin_only(user[0])
    return user


AdminPage = Annotated[tuple[Principal, str], Depends(admin_page)]
AdminForm = Annotated[tuple[Principal, str], Depends(admin_form)]


def render_admin(
    request: Request,
    template: str,
    user: tuple[Principal, str],
    section: str,
    status: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    who, csrf = user
    return render(
        request,
        template,
        status=status,
        who=who,
        csrf=csrf,
        nav="admin",
        section=section,
        sections=SECTIONS,
        **ctx,
    )
