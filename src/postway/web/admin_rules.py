"""Admin pages: the team channel, throttling and blocked domains of the organisation.

The team channel is saved by `channel_choice.save_channel` (the same checks as the API's
PUT /team/delivery-channel) and tested with the SMTP channel's own connection check."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from postway.channels.registry import MODULES
from postway.channels.smtp import RelayCheck
from postway.channels.smtp import check_relay as check_smtp_relay
from postway.domain.channel_guide import GUIDE
from postway.domain.states import ChannelName
from postway.domain.throttle import CHANNELS, Limits
from postway.errors import InvalidInput, PostwayError
from postway.store import channel_settings as cs
from postway.store import org_rules
from postway.store.users import Principal
from postway.web.admin_kit import AdminForm, AdminPage, render_admin
from postway.web.channel_choice import save_channel
from postway.web.deps import RuntimeDep
from postway.web.page_kit import error_words, redirect, split_addresses
from postway.web.pages_settings import SECURITY_CHOICES, _relay_form

router = APIRouter(include_in_schema=False)

# The team channel is one of these two: a Gmail account belongs to one rep, never a team.
TEAM_CHANNELS = (ChannelName.MANAGED.value, ChannelName.SMTP.value)

# --- team channel ---------------------------------------------------------------------------


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
    who, _ = user
    async with rt.db.session() as s, s.begin():
        row = await cs.team_setting(s, who.org_id)
    if form is None:  # the stored relay; the password is never sent back, only whether it is set
        form = {
            "host": (row.smtp_host or "") if row else "",
            "port": str(row.smtp_port or "") if row and row.smtp_port else "",
            "security": (row.smtp_security or "starttls") if row else "starttls",
            "username": (row.smtp_username or "") if row else "",
        }
    return render_admin(
        request,
        "admin_channel.html",
        user,
        "channel",
        status=status,
        team=row,
        chosen=chosen or (row.channel if row else ChannelName.MANAGED.value),
        channels=TEAM_CHANNELS,
        guide=GUIDE,
        security_choices=SECURITY_CHOICES,
        form=form,
        password_set=bool(row and row.smtp_password_enc),
        result=result,
        error=error,
        error_field=error_field,
    )


@router.get("/admin/channel", response_class=HTMLResponse)
async def channel_page(request: Request, user: AdminPage, rt: RuntimeDep) -> HTMLResponse:
    return await _channel_page(request, rt, user)


@router.post("/admin/channel", response_model=None)
async def save_team_channel(
    request: Request,
    user: AdminForm,
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
        if channel not in TEAM_CHANNELS:
            raise InvalidInput(
                "channel: the team channel is Postway's mail servers or your SMTP server",
                field="channel",
            )
        smtp = None
        if channel == ChannelName.SMTP.value and host.strip():
            smtp = _relay_form(host, port, security, username, password)
        await save_channel(rt, who.org_id, None, channel, smtp)
    except PostwayError as exc:
        field, words = error_words(exc)
        return await _channel_page(
            request, rt, user, form=form, chosen=channel, error=words, error_field=field,
            status=400,
        )
    title = GUIDE[ChannelName(channel)]["title"]
    return redirect(
        "/admin/channel", f"Saved: members who have not chosen a channel now use {title}."
    )


@router.post("/admin/channel/test", response_class=HTMLResponse)
async def test_team_relay(request: Request, user: AdminForm, rt: RuntimeDep) -> HTMLResponse:
    """Connect to the saved team relay, negotiate TLS and log in, without sending mail."""
    who, _ = user
    try:
        async with rt.db.session() as s, s.begin():
            row = await cs.team_setting(s, who.org_id)
            if row is None or not row.smtp_host:
                raise InvalidInput("smtp: save the team's SMTP server first, then test it", "smtp")
            relay = cs.relay_of(row, rt.box)
    except PostwayError as exc:
        return await _channel_page(request, rt, user, error=str(exc), status=400)
    result = await check_smtp_relay(relay, rt.settings)
    return await _channel_page(request, rt, user, chosen=ChannelName.SMTP.value, result=result)


# --- throttling -----------------------------------------------------------------------------

FIELDS = ("batch_size", "wait_seconds", "daily_cap", "per_minute")
SCOPES = (("all", "Every channel"),) + tuple(
    (c, GUIDE[ChannelName(c)]["title"].removesuffix(" (default)")) for c in CHANNELS
)


def _typed(value: str, field: str, scope: str) -> int | float | None:
    """A number typed into the throttle form; empty means no limit of that kind."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value) if field == "wait_seconds" else int(value)
    except ValueError:
        where = "" if scope == "all" else f"channels.{scope}."
        raise InvalidInput(f"{where}{field}: a number", field=f"{scope}.{field}") from None


def throttle_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The organisation's throttle settings from the form's `SCOPE.FIELD` inputs; a channel
    with no field filled in follows the organisation-wide limits."""
    data: dict[str, Any] = {}
    channels: dict[str, dict[str, Any]] = {}
    for scope, _ in SCOPES:
        values = {f: _typed(form.get(f"{scope}.{f}", ""), f, scope) for f in FIELDS}
        values = {k: v for k, v in values.items() if v is not None}
        if scope == "all":
            data.update(values)
        elif values:
            channels[scope] = values
    if channels:
        data["channels"] = channels
    return data


def _input_of(exc: PostwayError) -> str | None:
    """The form input (`SCOPE.FIELD`) an error names (`batch_size`, `channels.smtp.daily_cap`)."""
    field = str(getattr(exc, "field", "") or "")
    if field.startswith("channels."):
        return field.removeprefix("channels.")
    return f"all.{field}" if field in FIELDS else field or None


def _throttle_form(data: dict[str, Any]) -> dict[str, str]:
    form = {f"all.{f}": _shown(data.get(f)) for f in FIELDS}
    for scope, own in (data.get("channels") or {}).items():
        form.update({f"{scope}.{f}": _shown(own.get(f)) for f in FIELDS})
    return form


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _provider_words(limits: Limits) -> str:
    parts = []
    if limits.daily_cap:
        parts.append(f"{limits.daily_cap:,} a day")
    if limits.per_minute:
        parts.append(f"{limits.per_minute:,} a minute")
    return ", ".join(parts)


async def _throttle_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, _ = user
    if form is None:
        async with rt.db.session() as s, s.begin():
            org = await org_rules.organisation(s, who.org_id)
            form = _throttle_form(dict(org.throttle or {}))
    provider = {
        "managed": _provider_words(MODULES[ChannelName.MANAGED].limits()),
        "gmail": _provider_words(MODULES[ChannelName.GMAIL].limits()),
        "smtp": "Microsoft 365 relays: "
        + _provider_words(MODULES[ChannelName.SMTP].limits(relay_host="smtp.office365.com")),
    }
    return render_admin(
        request,
        "admin_throttle.html",
        user,
        "throttle",
        status=status,
        form=form,
        scopes=SCOPES,
        provider=provider,
        error=error,
        error_field=error_field,
    )


@router.get("/admin/throttle", response_class=HTMLResponse)
async def throttle_page(request: Request, user: AdminPage, rt: RuntimeDep) -> HTMLResponse:
    return await _throttle_page(request, rt, user)


@router.post("/admin/throttle", response_model=None)
async def save_throttle(request: Request, user: AdminForm, rt: RuntimeDep) -> Response:
    who, _ = user
    posted = await request.form()
    form = {k: str(v) for k, v in posted.items() if k != "csrf" and isinstance(v, str)}
    try:
        data = throttle_from_form(form)
        async with rt.db.session() as s, s.begin():
            await org_rules.set_throttle(s, who.org_id, data)
    except PostwayError as exc:
        _, words = error_words(exc)
        return await _throttle_page(
            request, rt, user, form=form, error=words, error_field=_input_of(exc), status=400
        )
    return redirect("/admin/throttle", "Saved: the next sends follow these limits.")


# --- blocked domains ------------------------------------------------------------------------


async def _blocked_page(
    request: Request,
    rt: RuntimeDep,
    user: tuple[Principal, str],
    *,
    typed: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    who, _ = user
    async with rt.db.session() as s, s.begin():
        org = await org_rules.organisation(s, who.org_id)
        domains = list(org.blocked_domains or [])
    return render_admin(
        request,
        "admin_blocked.html",
        user,
        "blocked",
        status=status,
        domains=domains,
        typed="\n".join(domains) if typed is None else typed,
        error=error,
    )


@router.get("/admin/blocked-domains", response_class=HTMLResponse)
async def blocked_page(request: Request, user: AdminPage, rt: RuntimeDep) -> HTMLResponse:
    return await _blocked_page(request, rt, user)


@router.post("/admin/blocked-domains", response_model=None)
async def save_blocked(
    request: Request,
    user: AdminForm,
    rt: RuntimeDep,
    domains: Annotated[str, Form()] = "",
) -> Response:
    who, _ = user
    try:
        async with rt.db.session() as s, s.begin():
            saved = await org_rules.set_blocked_domains(s, who.org_id, split_addresses(domains))
    except PostwayError as exc:
        return await _blocked_page(request, rt, user, typed=domains, error=str(exc), status=400)
    count = len(saved)
    return redirect(
        "/admin/blocked-domains",
        f"Saved: {count} blocked domain{'s' if count != 1 else ''}; mail to them fails "
        "with the reason blocked-domain.",
    )
