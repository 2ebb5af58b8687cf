"""Live status: the parts of the message page and of Conversations that change as deliveries
are tried, served alone so that `static/app.js` can poll them and swap them in place.

A part carries `data-live-url` while something in it may still change (a delivery queued or
deferred); the script polls that address every few seconds and stops once a part comes back
without it. Each part is answered only to its owner's session (404 for anyone else, the login
page for no session), like the full pages.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from postway.store import failures as fail
from postway.store import messages as msgs
from postway.store.users import Principal
from postway.web.deps import RuntimeDep
from postway.web.page_kit import PAGE_SIZE, PageUser, page_number, pages_of, render_fragment

router = APIRouter(include_in_schema=False)

WAITING = ("queued", "deferred")


def _version(*parts: object) -> str:
    """A short fingerprint of what a part shows: the script swaps only when it changes (so
    focus and open sections survive polls that bring nothing new)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


async def message_context(rt: RuntimeDep, who: Principal, message_id: str) -> dict[str, Any]:
    async with rt.db.session() as s, s.begin():
        m = await msgs.get_message(s, who, message_id)
        deliveries = await msgs.deliveries_of(s, m.id)
        events = await msgs.events_of(s, [d.id for d in deliveries])
    pending = any(d.state in WAITING for d in deliveries)
    version = _version(
        [(d.id, d.state, d.updated_at, d.attempts, len(events[d.id])) for d in deliveries]
    )
    return {
        "m": m,
        "deliveries": deliveries,
        "events": events,
        "pending": pending,
        "sending": any(d.state == "queued" for d in deliveries),
        "version": version,
    }


async def conversations_context(rt: RuntimeDep, who: Principal, page: int) -> dict[str, Any]:
    async with rt.db.session() as s, s.begin():
        rows, total = await msgs.conversations(s, who, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        _, failed_total = await msgs.failed_deliveries(s, who, 1, 0)
        failed_new = await fail.count_new(s, who, await fail.last_seen(s, who))
    pending = any(r["latest_state"] in WAITING for r in rows)
    version = _version(
        [(r["recipient"], r["latest_state"], r["last_at"], r["messages"]) for r in rows],
        total,
        failed_total,
        failed_new,
    )
    return {
        "rows": rows,
        "total": total,
        "failed_total": failed_total,
        "failed_new": failed_new,
        "page": page,
        "pages": pages_of(total),
        "pending": pending,
        "version": version,
        "tab": "all",
    }


@router.get("/live/messages/{message_id}", response_class=HTMLResponse)
async def message_part(
    request: Request, message_id: str, user: PageUser, rt: RuntimeDep
) -> HTMLResponse:
    who, _ = user
    ctx = await message_context(rt, who, message_id)
    return render_fragment(request, "_message_live.html", **ctx)


@router.get("/live/conversations", response_class=HTMLResponse)
async def conversations_part(
    request: Request, user: PageUser, rt: RuntimeDep, page: str = ""
) -> HTMLResponse:
    who, _ = user
    ctx = await conversations_context(rt, who, page_number(page))
    return render_fragment(request, "_conversations_live.html", **ctx)
