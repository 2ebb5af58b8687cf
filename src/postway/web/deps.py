"""Request plumbing: the runtime, the caller, and mapping Postway errors to HTTP answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from postway.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PostwayError,
    RateLimited,
    TooLarge,
    Unavailable,
)
from postway.runtime import Runtime
from postway.security import token_hash
from postway.store.models import utcnow
from postway.store.outage import OUTAGE_ERRORS, is_outage, unavailable
from postway.store.users import (
    Principal,
    TokenOwner,
    owners_of_tokens,
    principal_of,
    touch_tokens,
    user_for_session,
)

SESSION_COOKIE = "postway_session"


async def runtime(request: Request) -> Runtime:
    # async: a plain function dependency would be run in a thread for every request
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(runtime)]


# Where the API gate leaves the caller it authenticated, so the route does not look again.
PRINCIPAL_KEY = "postway.principal"


# Where the API gate leaves the token's owner for the send route (see `send_caller`).
SENDER_KEY = "postway.sender"
# Sends are authenticated from the per-process cache: the group commit checks the token
# again in its write transaction before anything is stored.
SEND_PATHS = frozenset({"/api/v1/messages"})


def bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send an API token: 'Authorization: Bearer <token>'")
    return token.strip()


async def token_owner(rt: Runtime, hashed: str) -> TokenOwner:
    """The token's owner, read now (no cache); its use is recorded at most once a minute."""
    async with rt.db.reader() as s, s.begin():
        owner = (await owners_of_tokens(s, [hashed]))[hashed]
    if isinstance(owner, AuthenticationFailed):
        raise owner
    now = utcnow()
    if owner.needs_touch(now):
        async with rt.db.session() as s, s.begin():
            await touch_tokens(s, [owner.token_id], now)
        owner = TokenOwner(owner.principal, owner.token_id, now)
    return owner


async def authenticate_bearer(rt: Runtime, header: str) -> Principal:
    """The caller named by an `Authorization: Bearer <token>` header value."""
    return (await token_owner(rt, token_hash(bearer_token(header)))).principal


@dataclass(frozen=True, slots=True)
class Sender:
    """The caller of a send: its token's hash and owner, checked again at the group commit."""

    token_hash: str
    owner: TokenOwner

    @property
    def principal(self) -> Principal:
        return self.owner.principal


async def _gate_send(rt: Runtime, scope: Scope, header: str) -> None:
    hashed = token_hash(bearer_token(header))
    owner = rt.send_cache.owners.get(hashed)
    if owner is None:
        owner = await token_owner(rt, hashed)
        rt.send_cache.owners.put(hashed, owner)
    scope[SENDER_KEY] = Sender(hashed, owner)


def api_gate(rt: Runtime) -> Callable[[Scope], Awaitable[Response | None]]:
    """Authenticates /api/ requests before their body is read (see `body_limit`): a caller
    without a valid token gets 401 however large a body it is sending."""

    async def gate(scope: Scope) -> Response | None:
        path = str(scope.get("path", ""))
        if not path.startswith("/api/"):
            return None
        header = Headers(scope=scope).get("authorization", "")
        try:
            if path in SEND_PATHS and scope.get("method") == "POST":
                await _gate_send(rt, scope, header)
            else:
                scope[PRINCIPAL_KEY] = await authenticate_bearer(rt, header)
        except AuthenticationFailed as exc:
            return error_response(exc)
        except OUTAGE_ERRORS as exc:
            if not is_outage(exc):
                raise
            return error_response(unavailable())
        return None

    return gate


# Documents the scheme in OpenAPI (securitySchemes); the token itself is checked above.
bearer_scheme = HTTPBearer(auto_error=False, description="An API token (`postway token create`)")


async def api_caller(
    request: Request,
    rt: RuntimeDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    known = request.scope.get(PRINCIPAL_KEY)
    if isinstance(known, Principal):
        return known
    return await authenticate_bearer(rt, request.headers.get("authorization", ""))


Caller = Annotated[Principal, Depends(api_caller)]


async def send_caller(
    request: Request,
    rt: RuntimeDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Sender:
    known = request.scope.get(SENDER_KEY)
    if isinstance(known, Sender):
        return known
    hashed = token_hash(bearer_token(request.headers.get("authorization", "")))
    return Sender(hashed, await token_owner(rt, hashed))


SendCaller = Annotated[Sender, Depends(send_caller)]


async def admin_caller(who: Caller) -> Principal:
    if not who.is_admin:
        raise Forbidden("this needs an administrator of your organisation")
    return who


Admin = Annotated[Principal, Depends(admin_caller)]


async def page_caller(request: Request, rt: RuntimeDep) -> tuple[Principal, str]:
    """The logged-in user of a web page and the CSRF token for its forms."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise AuthenticationFailed("please log in")
    async with rt.db.session() as s, s.begin():
        user, csrf = await user_for_session(s, token)
        return principal_of(user), csrf


STATUS = [
    (AuthenticationFailed, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (RateLimited, 429),
    (InvalidInput, 400),
    (Unavailable, 503),
]


def error_response(exc: PostwayError) -> JSONResponse:
    code = next((c for kind, c in STATUS if isinstance(exc, kind)), 500)
    body: dict[str, object] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if isinstance(exc, RateLimited | Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(body, status_code=code, headers=headers)
