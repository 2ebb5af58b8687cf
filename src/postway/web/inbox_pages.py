"""The demo's local inbox in the web app: what the managed channel delivered, offline.

Each user sees only the mail their organisation sent (confirmation mails included, which are
sent for the user who asked): an item is matched to its delivery by the signed VERP return
path it arrived with, so nothing in the mail itself decides who may read it.
"""

from __future__ import annotations

import email
from email import policy

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from postway.demo import InboxItem, LocalInbox
from postway.errors import NotFound
from postway.mta.verp import parse_return_path
from postway.runtime import Runtime
from postway.store.models import Delivery
from postway.store.users import Principal
from postway.web.deps import RuntimeDep
from postway.web.page_kit import PageUser, render

router = APIRouter(include_in_schema=False)
SHOWN = 200
SCANNED = 2000  # newest files looked at to find a user's SHOWN newest


def _inbox(rt: Runtime) -> LocalInbox:
    if rt.inbox is None:
        raise NotFound("the local inbox exists only in demo mode (postway serve --demo)")
    return rt.inbox


async def _own(rt: Runtime, who: Principal, items: list[InboxItem]) -> list[InboxItem]:
    """The items that were delivered for a delivery of the caller's organisation."""
    secret, domain = rt.settings.resolved_secret_key(), rt.settings.bounce_domain
    delivery_of = {i.id: parse_return_path(i.mail_from, secret, domain) for i in items}
    wanted = sorted({d for d in delivery_of.values() if d is not None})
    if not wanted:
        return []
    async with rt.db.reader() as s, s.begin():
        mine = set(
            await s.scalars(
                select(Delivery.id).where(Delivery.id.in_(wanted), Delivery.org_id == who.org_id)
            )
        )
    return [i for i in items if delivery_of[i.id] in mine]


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request, rt: RuntimeDep, user: PageUser) -> HTMLResponse:
    who, csrf = user
    items = (await _own(rt, who, _inbox(rt).items(SCANNED)))[:SHOWN]
    return render(request, "inbox.html", who=who, csrf=csrf, nav="inbox", items=items)


@router.get("/inbox/{item_id}", response_class=HTMLResponse)
async def inbox_item(
    request: Request, item_id: str, rt: RuntimeDep, user: PageUser
) -> HTMLResponse:
    who, csrf = user
    item = _inbox(rt).get(item_id)
    if item is None or not await _own(rt, who, [item]):
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
