"""The demo's local inbox in the web app: what the managed channel delivered, offline."""

from __future__ import annotations

import email
from email import policy

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from postway.demo import LocalInbox
from postway.errors import NotFound
from postway.runtime import Runtime
from postway.web.deps import RuntimeDep
from postway.web.page_kit import PageUser, render

router = APIRouter(include_in_schema=False)


def _inbox(rt: Runtime) -> LocalInbox:
    if rt.inbox is None:
        raise NotFound("the local inbox exists only in demo mode (postway serve --demo)")
    return rt.inbox


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request, rt: RuntimeDep, user: PageUser) -> HTMLResponse:
    who, csrf = user
    items = _inbox(rt).items()
    return render(request, "inbox.html", who=who, csrf=csrf, nav="inbox", items=items)


@router.get("/inbox/{item_id}", response_class=HTMLResponse)
async def inbox_item(
    request: Request, item_id: str, rt: RuntimeDep, user: PageUser
) -> HTMLResponse:
    who, csrf = user
    item = _inbox(rt).get(item_id)
    if item is None:
        raise NotFound("no such message in the local inbox")
    raw = item.path.read_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    body = msg.get_body(("plain", "html"))
    return render(
        request,
        "inbox_item.html",
        who=who,
        csrf=csrf,
        nav="inbox",
        item=item,
        headers=[(k, str(v)) for k, v in msg.items()],
        body=body.get_content() if body is not None else "",
    )
