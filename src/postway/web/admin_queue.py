"""Admin pages: suppressed addresses (list, search, lift) and the delivery queue (deferred and
failed deliveries; retry, purge through `delivery.queue_admin`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from postway.delivery.queue_admin import get_delivery, purge, retry_now
from postway.errors import Conflict, NotFound, PostwayError
from postway.store import org_queue, org_rules
from postway.store.users import Principal
from postway.web.admin_kit import AdminForm, AdminPage, render_admin
from postway.web.deps import RuntimeDep
from postway.web.page_kit import PAGE_SIZE, page_number, pages_of, redirect

router = APIRouter(include_in_schema=False)

# --- suppressions ---------------------------------------------------------------------------


async def _suppressions_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    q: str,
    page: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, _ = user
    q = q.strip()[:320]
    number = page_number(page)
    async with rt.db.session() as s, s.begin():
        rows, total = await org_rules.suppressions(
            s, who.org_id, q, PAGE_SIZE, (number - 1) * PAGE_SIZE
        )
    return render_admin(
        request,
        "admin_suppressions.html",
        user,
        "suppressions",
        status=status,
        rows=rows,
        total=total,
        q=q,
        page=number,
        pages=pages_of(total),
        base="/admin/suppressions?" + (urlencode({"q": q}) + "&" if q else ""),
        error=error,
    )


@router.get("/admin/suppressions", response_class=HTMLResponse)
async def suppressions_page(
    request: Request, user: AdminPage, rt: RuntimeDep, q: str = "", page: str = ""
) -> HTMLResponse:
    return await _suppressions_page(request, rt, user, q, page)


@router.post("/admin/suppressions/lift", response_model=None)
async def lift(
    request: Request,
    user: AdminForm,
    rt: RuntimeDep,
    address: Annotated[str, Form()] = "",
    q: Annotated[str, Form()] = "",
) -> Response:
    who, _ = user
    try:
        async with rt.db.session() as s, s.begin():
            await org_rules.lift_suppression(s, who.org_id, address)
    except NotFound as exc:
        return await _suppressions_page(request, rt, user, q, "", error=str(exc), status=404)
    back = "/admin/suppressions" + ("?" + urlencode({"q": q.strip()}) if q.strip() else "")
    return redirect(back, f"Lifted: mail to {address.strip().lower()} will be sent again.")


# --- the queue ------------------------------------------------------------------------------

VIEW_TITLES = (
    ("waiting", "Waiting"),
    ("deferred", "Deferred"),
    ("failed", "Failed and bounced"),
)


async def _queue_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    view: str,
    page: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, _ = user
    view = view if view in org_queue.VIEWS else "waiting"
    number = page_number(page)
    async with rt.db.session() as s, s.begin():
        rows, total = await org_queue.queue_view(
            s, who.org_id, view, PAGE_SIZE, (number - 1) * PAGE_SIZE
        )
    return render_admin(
        request,
        "admin_queue.html",
        user,
        "queue",
        status=status,
        view=view,
        views=VIEW_TITLES,
        rows=rows,
        total=total,
        page=number,
        pages=pages_of(total),
        base=f"/admin/queue?view={view}&",
        error=error,
    )


@router.get("/admin/queue", response_class=HTMLResponse)
async def queue_page(
    request: Request, user: AdminPage, rt: RuntimeDep, view: str = "waiting", page: str = ""
) -> HTMLResponse:
    return await _queue_page(request, rt, user, view, page)


async def _change(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    delivery_id: str,
    view: str,
    action: str,
) -> Response:
    who, _ = user
    try:
        async with rt.db.session() as s, s.begin():
            d = await get_delivery(s, delivery_id)
            if d.org_id != who.org_id:  # another organisation's: not found, never revealed
                raise NotFound(f"no delivery with id {delivery_id}")
            if action == "retry":
                retry_now(s, d, rt.settings, who.email)
            else:
                purge(s, d, who.email)
            recipient = d.recipient
    except PostwayError as exc:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        return await _queue_page(request, rt, user, view, "", error=str(exc), status=status)
    if action == "retry":
        rt.wake_worker()
        done = f"{recipient}: queued to be tried now."
    else:
        done = f"{recipient}: taken out of the queue and marked failed (purged)."
    return redirect(f"/admin/queue?view={view if view in org_queue.VIEWS else 'waiting'}", done)


@router.post("/admin/queue/{delivery_id}/retry", response_model=None)
async def retry(
    request: Request,
    delivery_id: str,
    user: AdminForm,
    rt: RuntimeDep,
    view: Annotated[str, Form()] = "waiting",
) -> Response:
    return await _change(request, rt, user, delivery_id, view, "retry")


@router.post("/admin/queue/{delivery_id}/purge", response_model=None)
async def purge_delivery(
    request: Request,
    delivery_id: str,
    user: AdminForm,
    rt: RuntimeDep,
    view: Annotated[str, Form()] = "waiting",
) -> Response:
    return await _change(request, rt, user, delivery_id, view, "purge")
