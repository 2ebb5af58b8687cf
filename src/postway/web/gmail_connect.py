"""Connecting a rep's Gmail account: OAuth 2 authorization code with PKCE and offline access.

    GET  /api/v1/delivery-channel/gmail/connect   -> {"authorization_url": ...}
    GET  /settings/channel/gmail/connect           (the page's link: the same, then 303)
    GET  /oauth/google/callback?code=&state=       -> 303 to the channel page
    DELETE /api/v1/delivery-channel/gmail          (and the page's disconnect button)

The `state` value is random, single use, expires after 10 minutes and is bound to the user
who started the flow, and to their browser session when started from the page (see
`store.accounts.take_flow`). Tokens are stored encrypted and never returned or logged.
One account per user: another address replaces the connected one only when the user
confirmed (`replace=true`); connecting the same address again is a reconnect, which
releases the mail parked while the account could not send, in its original order.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from postway.channels import gmail
from postway.channels.google_api import (
    OPENID_SCOPES,
    SCOPE_READONLY,
    SCOPE_SEND,
    SCOPE_SETTINGS,
    GoogleError,
    new_pkce_verifier,
    pkce_challenge,
)
from postway.delivery.transitions import release_parked
from postway.domain.states import ChannelName
from postway.errors import Conflict, NotFound
from postway.runtime import Runtime
from postway.store import accounts
from postway.store.models import Delivery, utcnow
from postway.store.users import Principal
from postway.web.deps import SESSION_COOKIE, Caller, RuntimeDep
from postway.web.openapi_doc import error_responses
from postway.web.page_kit import FormUser, PageUser, redirect

log = logging.getLogger("postway.web")
router = APIRouter()
CALLBACK_PATH = "/oauth/google/callback"
CHANNEL_PAGE = "/settings/channel"


class AuthorizationOut(BaseModel):
    """Where to send the user's browser to allow Postway to send as their Gmail account."""

    authorization_url: str


def scopes_for(bounce_scanning: bool) -> list[str]:
    """Send, the address (openid email), send-as aliases; reading only to scan for bounces."""
    scopes = [SCOPE_SEND, *OPENID_SCOPES, SCOPE_SETTINGS]
    if bounce_scanning:
        scopes.append(SCOPE_READONLY)
    return scopes


def _redirect_uri(rt: Runtime) -> str:
    return rt.public_url.rstrip("/") + CALLBACK_PATH


async def start_connect(
    rt: Runtime,
    who: Principal,
    *,
    bounce_scanning: bool,
    replace: bool,
    session_token: str | None,
) -> str:
    """Record a connect flow and return the URL of Google's consent page."""
    if not rt.settings.google_client_id:
        raise Conflict(
            "connecting Gmail is not set up on this server: the administrator sets "
            "POSTWAY_GOOGLE_CLIENT_ID and POSTWAY_GOOGLE_CLIENT_SECRET"
        )
    verifier = new_pkce_verifier()
    async with rt.db.session() as s, s.begin():
        existing = await accounts.account_of(s, who.user_id, gmail.PROVIDER)
        if existing is not None and existing.status == "connected" and not replace:
            raise Conflict(
                f"{existing.address} is connected already; connecting another account "
                "replaces it: confirm with replace=true (or disconnect it first)"
            )
        hint = existing.address if existing is not None and not replace else None
        state = await accounts.start_flow(
            s,
            rt.box,
            user_id=who.user_id,
            org_id=who.org_id,
            provider=gmail.PROVIDER,
            verifier=verifier,
            session_token=session_token,
            bounce_scanning=bounce_scanning,
            replace=replace,
        )
    return rt.google.authorization_url(
        state=state,
        code_challenge=pkce_challenge(verifier),
        redirect_uri=_redirect_uri(rt),
        scopes=scopes_for(bounce_scanning),
        login_hint=hint,
    )


async def finish_connect(rt: Runtime, code: str, state: str, session_token: str | None) -> str:
    """Exchange the code, learn the address and its aliases, store the account; returns the
    connected address. Mail parked for this user's Gmail channel is released."""
    async with rt.db.session() as s, s.begin():
        flow = await accounts.take_flow(
            s, rt.box, state=state, provider=gmail.PROVIDER, session_token=session_token
        )
    if flow is None:
        raise accounts.flow_refused()
    try:
        tokens = await rt.google.exchange_code(
            code=code, code_verifier=flow.verifier, redirect_uri=_redirect_uri(rt)
        )
        if tokens.scopes and SCOPE_SEND not in tokens.scopes:
            await _revoke_quietly(rt, tokens.refresh_token or tokens.access_token)
            raise Conflict(
                "Google did not grant permission to send mail; connect again and allow "
                "Postway to send email on your behalf"
            )
        address = await rt.google.userinfo_email(tokens.access_token)
        aliases = [a.address for a in await rt.google.send_as(tokens.access_token) if a.verified]
    except GoogleError as exc:
        raise Conflict(f"connecting Gmail failed: {exc}") from exc
    now = utcnow()
    try:
        async with rt.db.session() as s, s.begin():
            row, _ = await accounts.save_connection(
                s,
                rt.box,
                org_id=flow.org_id,
                user_id=flow.user_id,
                provider=gmail.PROVIDER,
                address=address,
                tokens=accounts.NewTokens(
                    tokens.access_token, tokens.refresh_token, tokens.expires_at, tokens.scopes
                ),
                send_as=aliases,
                bounce_scanning=flow.bounce_scanning,
                replace=flow.replace,
            )
            released = await release_parked(
                s,
                Delivery.user_id == flow.user_id,
                Delivery.channel == ChannelName.GMAIL.value,
                now=now,
                by=f"{address} connected",
            )
    except Conflict:
        # another address than the connected one, not confirmed: leave no grant behind
        await _revoke_quietly(rt, tokens.refresh_token or tokens.access_token)
        raise
    log.info("gmail account %s connected; %d parked deliveries released", row.id, len(released))
    rt.wake_worker()
    return address


async def disconnect(rt: Runtime, who: Principal) -> str:
    """Revoke the grant at Google and delete the tokens; returns the address."""
    async with rt.db.session() as s, s.begin():
        row = await accounts.account_of(s, who.user_id, gmail.PROVIDER)
        if row is None:
            raise NotFound("no Gmail account is connected")
        access, refresh = accounts.tokens_of(row, rt.box)
        address, account_id = row.address, row.id
    token = refresh or access
    if token:
        # a grant Google cannot revoke now (offline) is still forgotten here; the user can
        # remove it in their Google account's security settings
        await _revoke_quietly(rt, token)
    async with rt.db.session() as s, s.begin():
        row = await accounts.account_of(s, who.user_id, gmail.PROVIDER)
        if row is not None and row.id == account_id:
            await accounts.forget_account(s, row)
    await rt.registry.forget(account_id)
    return address


async def _revoke_quietly(rt: Runtime, token: str | None) -> None:
    if not token:
        return
    try:
        await rt.google.revoke(token)
    except GoogleError:
        log.warning("revoking a Google grant failed; the tokens are deleted here anyway")


# --- API --------------------------------------------------------------------------------------


@router.get(
    "/api/v1/delivery-channel/gmail/connect",
    response_model=AuthorizationOut,
    responses=error_responses(409),
)
async def connect_gmail(
    who: Caller,
    rt: RuntimeDep,
    bounce_scanning: bool = False,
    replace: bool = False,
) -> AuthorizationOut:
    """Start connecting your Gmail account: open `authorization_url` in a browser and allow
    Postway there; Google then returns to Postway, which stores the account. With
    `bounce_scanning` Postway may also read the mailbox to find bounces. A connected account
    is replaced by another only with `replace=true`."""
    url = await start_connect(
        rt, who, bounce_scanning=bounce_scanning, replace=replace, session_token=None
    )
    return AuthorizationOut(authorization_url=url)


@router.delete(
    "/api/v1/delivery-channel/gmail", status_code=204, responses=error_responses(404)
)
async def disconnect_gmail(who: Caller, rt: RuntimeDep) -> Response:
    """Revoke Postway's access at Google and delete the account's tokens. Mail waiting for
    it stays parked until an account is connected again or it expires."""
    await disconnect(rt, who)
    return Response(status_code=204)


# --- browser ----------------------------------------------------------------------------------


@router.get(CALLBACK_PATH, include_in_schema=False)
async def google_callback(
    request: Request,
    rt: RuntimeDep,
    code: Annotated[str, Query(max_length=2000)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    if error:
        # the user said no (or Google refused): use the state up so it cannot be replayed
        async with rt.db.session() as s, s.begin():
            await accounts.take_flow(
                s, rt.box, state=state, provider=gmail.PROVIDER, session_token=session
            )
        return redirect(CHANNEL_PAGE, "Gmail was not connected: access was not allowed.")
    if not code:
        raise NotFound("this connect link has no authorization code; start connecting again")
    address = await finish_connect(rt, code, state, session)
    return redirect(
        CHANNEL_PAGE,
        f"Connected {address}. Choose \u201cYour Gmail account\u201d below to send through it.",
    )


@router.get("/settings/channel/gmail/connect", include_in_schema=False)
async def connect_from_page(
    request: Request,
    user: PageUser,
    rt: RuntimeDep,
    bounce_scanning: bool = False,
    replace: bool = False,
) -> Response:
    # A link, not a form: the page's Content-Security-Policy (form-action 'self') would stop
    # a form's redirect to Google. Starting a flow changes nothing until Google calls back
    # with this browser's session, so a forged link can do no harm.
    url = await start_connect(
        rt,
        user[0],
        bounce_scanning=bounce_scanning,
        replace=replace,
        session_token=request.cookies.get(SESSION_COOKIE),
    )
    return Response(status_code=303, headers={"Location": url})


@router.post("/settings/channel/gmail/disconnect", include_in_schema=False)
async def disconnect_from_page(user: FormUser, rt: RuntimeDep) -> Response:
    address = await disconnect(rt, user[0])
    return redirect(
        CHANNEL_PAGE, f"Disconnected {address}: Postway's access was revoked at Google."
    )
