"""The Failed Deliveries tab: filters, search, paging, "new since you last looked", and the
actions on a row (resend, lift the suppression)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from postway.delivery.queue_admin import get_delivery, retry_now
from postway.errors import Conflict, Forbidden
from postway.store import failures as fail
from postway.store import messages as msgs
from postway.store.models import utcnow
from postway.store.users import Principal
from postway.web.deps import RuntimeDep
from postway.web.page_kit import PAGE_SIZE, FormUser, pages_of, redirect, render

router = APIRouter(include_in_schema=False)

FAILED_URL = "/conversations?tab=failed"
# where an action may send the person back to: the failed tab with its filters, nothing else
_BACK = re.compile(r"/conversations\?tab=failed(&[\w.%+=&@-]*)?")


def list_url(f: fail.FailureFilter, page: int = 1) -> str:
    """The failed tab's address for these filters (and page)."""
    query = {"state": f.state, "reason": f.reason, "channel": f.channel, "q": f.address}
    query = {k: v for k, v in query.items() if v}
    if page > 1:
        query["page"] = str(page)
    return FAILED_URL + ("&" + urlencode(query) if query else "")


async def failed_tab(
    request: Request, rt: RuntimeDep, who: Principal, csrf: str, page: int, f: fail.FailureFilter
) -> HTMLResponse:
    """Render the tab, then record that the person has seen it (the badge counts from now)."""
    f = f.clean()
    now = utcnow()
    async with rt.db.session() as s, s.begin():
        seen = await fail.last_seen(s, who)
        rows, total = await fail.search_failures(s, who, f, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        _, failed_total = await msgs.failed_deliveries(s, who, 1, 0)
        reasons, channels = await fail.failure_facets(s, who)
        blockers = await fail.resend_blockers(s, who, [d for d, _ in rows])
        suppressed = await fail.suppressed_addresses(s, who.org_id, {d.recipient for d, _ in rows})
        await fail.mark_seen(s, who, now)
    base = list_url(f)
    return render(
        request,
        "conversations.html",
        who=who,
        csrf=csrf,
        nav="conversations",
        tab="failed",
        failures=rows,
        total=total,
        failed_total=failed_total,
        failed_new=0,  # opened now: nothing is new any more once this page is shown
        new_ids={d.id for d, _ in rows if seen is None or d.updated_at > seen},
        page=page,
        pages=pages_of(total),
        pager_base=base + "&",
        back=list_url(f, page),
        filters=f,
        filtered=f != fail.FailureFilter(),
        reasons=reasons,
        channels=channels,
        blockers=blockers,
        suppressed={a.lower() for a in suppressed},
    )


def _back(value: str) -> str:
    return value if _BACK.fullmatch(value) else FAILED_URL


@router.post("/failed-deliveries/{delivery_id}/resend")
async def resend(
    delivery_id: str, user: FormUser, rt: RuntimeDep, back: Annotated[str, Form()] = ""
) -> RedirectResponse:
    """Send a failed or bounced recipient again, unless it could only fail the same way."""
    who, _ = user
    async with rt.db.session() as s, s.begin():
        d = await get_delivery(s, delivery_id, user_id=who.user_id)
        blocked = (await fail.resend_blockers(s, who, [d])).get(d.id)
        if blocked:
            raise Conflict(f"{d.recipient} was not resent: {blocked}.")
        retry_now(s, d, rt.settings, who.email)
        recipient = d.recipient
    rt.wake_worker()
    return redirect(_back(back), f"Sending to {recipient} again; it leaves this list once tried.")


@router.post("/failed-deliveries/{delivery_id}/lift-suppression")
async def lift(
    delivery_id: str, user: FormUser, rt: RuntimeDep, back: Annotated[str, Form()] = ""
) -> RedirectResponse:
    """Lift the organisation's suppression of this failure's address (administrators)."""
    who, _ = user
    if not who.is_admin:
        raise Forbidden("lifting a suppression needs an administrator of your organisation")
    async with rt.db.session() as s, s.begin():
        d = await get_delivery(s, delivery_id, user_id=who.user_id)
        lifted = await fail.lift_suppression(s, who.org_id, d.recipient)
        recipient = d.recipient
    words = (
        f"{recipient} is no longer suppressed; you can resend to it now."
        if lifted
        else f"{recipient} was not suppressed."
    )
    return redirect(_back(back), words)
