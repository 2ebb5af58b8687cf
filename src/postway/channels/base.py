"""The one small interface every delivery channel implements.

Channels only deliver and report an outcome per recipient. Queueing, retries, throttling,
suppression and events belong to the delivery pipeline, which never asks which channel it holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from postway.domain.states import DeliveryState
from postway.domain.throttle import Limits
from postway.errors import ChannelError


@dataclass(frozen=True, slots=True)
class Recipient:
    delivery_id: str
    address: str


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One stored message on its way to some of its recipients.

    `raw` is the complete RFC 5322 message as built by `domain.message` (Bcc already removed);
    channels may add trace or signature headers in front of it but never change the body.
    """

    message_id: str
    org_id: str
    user_id: str
    from_address: str
    raw: bytes
    recipients: tuple[Recipient, ...]
    needs_smtputf8: bool = False


@dataclass(slots=True)
class Outcome:
    """What happened to one recipient in one attempt."""

    delivery_id: str
    recipient: str
    state: DeliveryState
    reply_code: int | None = None
    status: str | None = None  # enhanced status code, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote server's words
    reason: str | None = None  # Sisimai-style reason or one of Postway's own
    hard: bool | None = None
    remote_mta: str | None = None
    retry_after: float | None = None  # seconds, when the server named a wait
    detail: dict[str, str] = field(default_factory=dict)  # e.g. remote queue id
    # The channel itself is unusable (e.g. relay rejected our credentials): the user must act.
    needs_attention: str | None = None


class Channel(Protocol):
    """A way out for mail. Implementations must never raise for per-recipient failures:
    they return an `Outcome` for every recipient of the message, in any order."""

    name: str

    async def deliver(self, message: OutboundMessage) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


def outcomes_for_all(message: OutboundMessage, **kwargs: object) -> list[Outcome]:
    """The same outcome for every recipient (a connection-level failure, for example)."""
    return [
        Outcome(delivery_id=r.delivery_id, recipient=r.address, **kwargs)  # type: ignore[arg-type]
        for r in message.recipients
    ]


# --- connected accounts ------------------------------------------------------------------------


class AccountStatus:
    CONNECTED = "connected"
    NEEDS_RECONNECT = "needs_reconnect"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class AccountView:
    """What a channel and the pipeline may know of a connected account: never its tokens."""

    id: str
    user_id: str
    provider: str
    address: str
    status: str
    paused_until: datetime | None
    reason: str | None
    send_as: tuple[str, ...]
    bounce_scanning: bool
    version: int


class AccountNeedsReconnect(ChannelError):
    """The provider refused the account's grant (revoked, expired, password changed): only
    the user can fix it, by connecting the account again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step="auth")


class AccountAccess(Protocol):
    """How an API channel reaches its account's state and tokens without touching the
    database (implemented by `store.accounts.StoredAccounts`)."""

    async def fresh_token(self, account_id: str, refused: str | None = None) -> str:
        """A valid access token, refreshed first when it is near expiry or is `refused` (a
        token the provider just answered 401 to); one refresh at a time per account across
        all workers. Raises AccountNeedsReconnect."""
        ...

    async def mark_needs_reconnect(self, account_id: str, reason: str) -> None: ...

    async def pause_until(self, account_id: str, until: datetime, reason: str) -> None: ...

    async def thread_of(self, account_id: str, message_ids: list[str]) -> str | None:
        """The provider's conversation id of the first of `message_ids` sent through this
        account, if any (so a reply stays in its conversation)."""
        ...

    async def remember_thread(self, account_id: str, message_id: str, thread_id: str) -> None:
        ...


# --- the table of channel modules --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelModule:
    """What the registry knows of one channel: how to build it, its provider's limits, its
    settings schema and its connection check. Adding a channel is adding one of these."""

    name: str
    # Published per-mailbox limits of the provider, given the route's details (relay host...).
    limits: Callable[..., Limits]
    # Pydantic model of the channel's own settings, or None when it has none.
    settings_schema: type | None = None
    # Connection test; the arguments are channel specific (a relay, an account...).
    check: Callable[..., Awaitable[Any]] | None = None
    # Provider of the connected account this channel sends through, or None.
    account_provider: str | None = None
