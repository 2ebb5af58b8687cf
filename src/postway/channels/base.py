"""The one small interface every delivery channel implements.

Channels only deliver and report an outcome per recipient. Queueing, retries, throttling,
suppression and events belong to the delivery pipeline, which never asks which channel it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from postway.domain.states import DeliveryState


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
