"""The administrator's pages, under /admin: users, the team channel, throttling, blocked
domains, suppressions and the queue. Each is scoped to the administrator's organisation;
members get 403 on every one of them (GET and POST)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from postway.web import admin_queue, admin_rules, admin_users, setup_page
from postway.web.admin_kit import SECTIONS, AdminPage

router = APIRouter(include_in_schema=False)

# Every admin page a browser can open (for tests that visit each: accessibility, phone width).
ADMIN_PAGE_PATHS: tuple[str, ...] = tuple(path for _, path, _ in SECTIONS)

# Every admin form target, with `{user_id}` / `{delivery_id}` standing for an id.
ADMIN_FORM_PATHS: tuple[str, ...] = (
    "/admin/users",
    "/admin/users/{user_id}/role",
    "/admin/users/{user_id}/deactivate",
    "/admin/users/{user_id}/reactivate",
    "/admin/users/{user_id}/reset-password",
    "/admin/channel",
    "/admin/channel/test",
    "/admin/throttle",
    "/admin/blocked-domains",
    "/admin/suppressions/lift",
    "/admin/queue/{delivery_id}/retry",
    "/admin/queue/{delivery_id}/purge",
)


@router.get("/admin")
async def admin_home(user: AdminPage) -> RedirectResponse:
    return RedirectResponse("/admin/users", status_code=303)


router.include_router(admin_users.router)
router.include_router(admin_rules.router)
router.include_router(admin_queue.router)
# the page that creates the first administrator, before anyone can log in
router.include_router(setup_page.router)
