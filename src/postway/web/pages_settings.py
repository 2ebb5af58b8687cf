"""Web pages for a rep's set-up: sending identities and the delivery channel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from postway.channels.smtp import RelayCheck
from postway.domain.channel_guide import GUIDE
from postway.domain.states import ChannelName
from postway.errors import InvalidInput, PostwayError
from postway.store import identities as ids
from postway.store.users import Principal
from postway.web.channel_choice import check_relay, current_channel, save_channel
from postway.web.deps import RuntimeDep
from postway.web.gmail_view import from_by_channel, gmail_account_out
from postway.web.page_kit import FormUser, PageUser, error_words, redirect, render
from postway.web.verification import send_verification

router = APIRouter(include_in_schema=False)

# The aspects of a channel, in the order the comparison shows them, with their row labels.
ASPECTS = (
    ("from", "What the recipient sees as From"),
    ("via", '"via" tag next to your name'),
    ("bounces", "Bounces and failed deliveries"),
    ("sent_copy", "Copy in your Sent folder"),
    ("dmarc", "Authentication (DMARC)"),
)
SECURITY_CHOICES = (
    ("starttls", "STARTTLS (usually port 587)"),
    ("tls", "TLS from the first byte (usually port 465)"),
    ("none", "None: plain text (internal relays only)"),
)
SOURCE_WORDS = {
    "user": "You chose this channel.",
    "team": "This is your team's channel, set by an administrator; it applies until you "
    "choose your own.",
    "default": "Nobody has chosen a channel yet, so Postway's own mail servers are used.",
}


# --- identities -----------------------------------------------------------------------------


async def _identities_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, csrf = user
    async with rt.db.session() as s, s.begin():
        rows = await ids.list_identities(s, who)
    view = await current_channel(rt, who)
    return render(
        request,
        "identities.html",
        status=status,
        who=who,
        csrf=csrf,
        nav="identities",
        identities=rows,
        guide=GUIDE,
        default_channel=view.channel.value,
        form=form or {},
        error=error,
        error_field=error_field,
    )


@router.get("/identities", response_class=HTMLResponse)
async def identities(request: Request, user: PageUser, rt: RuntimeDep) -> HTMLResponse:
    return await _identities_page(request, rt, user)


@router.post("/identities", response_model=None)
async def add_identity(
    request: Request,
    user: FormUser,
    rt: RuntimeDep,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    reply_to: Annotated[str, Form()] = "",
    signature: Annotated[str, Form()] = "",
    channel: Annotated[str, Form()] = "",
) -> Response:
    who, _ = user
    form = {"name": name, "email": email, "reply_to": reply_to, "signature": signature}
    form["channel"] = channel
    try:
        async with rt.db.session() as s, s.begin():
            row = await ids.create_identity(
                s,
                who,
                name=name.strip(),
                email=email.strip(),
                reply_to=reply_to.strip() or None,
                signature=signature or None,
                channel=channel or None,
            )
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _identities_page(
            request, rt, user, form=form, error=words, error_field=field, status=400
        )
    return redirect(
        "/identities",
        f"Added {row.name} <{row.email}>. Send the confirmation link to verify the address.",
    )


@router.post("/identities/{identity_id}/verify")
async def verify_identity(identity_id: str, user: FormUser, rt: RuntimeDep) -> Response:
    row = await send_verification(rt, user[0], identity_id)
    return redirect(
        "/identities", f"A confirmation link is on its way to {row.email}; open it to verify."
    )


@router.post("/identities/{identity_id}/delete")
async def delete_identity(identity_id: str, user: FormUser, rt: RuntimeDep) -> Response:
    async with rt.db.session() as s, s.begin():
        row = await ids.get_identity(s, user[0], identity_id)
        email = row.email
        await ids.delete_identity(s, user[0], identity_id)
    return redirect("/identities", f"Deleted the identity {email}; sent mail keeps its history.")


# --- delivery channel -----------------------------------------------------------------------


async def _channel_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    *,
    form: dict[str, str] | None = None,
    chosen: str | None = None,
    result: RelayCheck | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, csrf = user
    view = await current_channel(rt, who)
    own = view.setting if view.source == "user" else None
    gmail = await gmail_account_out(rt, who)
    async with rt.db.session() as s, s.begin():
        # what recipients of each identity will see as From if it sends through Gmail
        gmail_froms = [
            (i, (await from_by_channel(s, i))[ChannelName.GMAIL.value])
            for i in await ids.list_identities(s, who)
        ]
    if form is None:  # the stored relay; the password is never sent back, only whether it is set
        form = {
            "host": (own.smtp_host or "") if own else "",
            "port": str(own.smtp_port or "") if own else "",
            "security": (own.smtp_security or "starttls") if own else "starttls",
            "username": (own.smtp_username or "") if own else "",
        }
    return render(
        request,
        "channel.html",
        status=status,
        who=who,
        csrf=csrf,
        nav="channel",
        view=view,
        source_words=SOURCE_WORDS[view.source],
        chosen=chosen or view.channel.value,
        guide=GUIDE,
        aspects=ASPECTS,
        channels=[c.value for c in ChannelName],
        security_choices=SECURITY_CHOICES,
        form=form,
        password_set=bool(own and own.smtp_password_enc),
        attention=view.setting.attention if view.setting else None,
        gmail=gmail,
        gmail_froms=gmail_froms,
        result=result,
        error=error,
        error_field=error_field,
    )


def _relay_form(
    host: str, port: str, security: str, username: str, password: str
) -> dict[str, object]:
    """The relay as `validate_relay` expects it; an empty password keeps the stored one."""
    port = port.strip()
    if port and not port.isdigit():
        raise InvalidInput("smtp.port: a number from 1 to 65535", field="smtp.port")
    return {
        "host": host.strip(),
        "port": int(port) if port else None,
        "security": security or "starttls",
        "username": username.strip() or None,
        "password": password or None,
    }


@router.get("/settings/channel", response_class=HTMLResponse)
async def channel_settings(request: Request, user: PageUser, rt: RuntimeDep) -> HTMLResponse:
    return await _channel_page(request, rt, user)


@router.post("/settings/channel", response_model=None)
async def save_channel_settings(
    request: Request,
    user: FormUser,
    rt: RuntimeDep,
    channel: Annotated[str, Form()] = "",
    host: Annotated[str, Form()] = "",
    port: Annotated[str, Form()] = "",
    security: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    who, _ = user
    form = {"host": host, "port": port, "security": security, "username": username}
    try:
        # a relay typed in while another channel is chosen is not saved: it was not asked for
        if not channel:
            raise InvalidInput("channel: choose one of the channels", field="channel")
        smtp = None
        if channel == ChannelName.SMTP.value and host.strip():
            smtp = _relay_form(host, port, security, username, password)
        await save_channel(rt, who.org_id, who.user_id, channel, smtp)
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _channel_page(
            request,
            rt,
            user,
            form=form,
            chosen=channel,
            error=words,
            error_field=field,
            status=400,
        )
    title = GUIDE[ChannelName(channel)]["title"]
    return redirect("/settings/channel", f"Saved: your mail now goes through {title}.")


@router.post("/settings/channel/test", response_class=HTMLResponse)
async def test_channel(
    request: Request,
    user: FormUser,
    rt: RuntimeDep,
    channel: Annotated[str, Form()] = "",
    host: Annotated[str, Form()] = "",
    port: Annotated[str, Form()] = "",
    security: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> HTMLResponse:
    who, _ = user
    form = {"host": host, "port": port, "security": security, "username": username}
    try:
        smtp = _relay_form(host, port, security, username, password) if host.strip() else None
        result = await check_relay(rt, who, smtp)
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _channel_page(
            request,
            rt,
            user,
            form=form,
            chosen=channel,
            error=words,
            error_field=field,
            status=400,
        )
    return await _channel_page(request, rt, user, form=form, chosen=channel, result=result)
