"""Recipient states and the channels that produce them."""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"  # accepted by the recipient's own server (managed channel)
    SENT = "sent"  # accepted by Gmail or the user's relay
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"

    @property
    def is_final(self) -> bool:
        return self not in (DeliveryState.QUEUED, DeliveryState.DEFERRED)

    @property
    def is_failure(self) -> bool:
        return self in (DeliveryState.BOUNCED, DeliveryState.FAILED)


class ChannelName(StrEnum):
    MANAGED = "managed"
    GMAIL = "gmail"
    SMTP = "smtp"


# Reasons Postway itself assigns (bounce reasons come from domain.bounce_reasons / Sisimai's set).
REASON_EXPIRED = "expired"
REASON_BLOCKED_DOMAIN = "blocked-domain"
REASON_SUPPRESSED = "suppressed"
REASON_CHANNEL_ERROR = "channel-error"
REASON_AUTH_FAILURE = "authfailure"
REASON_THROTTLED = "throttled"  # waits for the next sending window; not a failure
# A connected account (Gmail) cannot send now: its mail is parked without spending attempts
# (see delivery.transitions.Park). Paused: a provider quota, until the pause ends.
# Disconnected: none connected or the grant refused, until the user reconnects; mail still
# parked when its lifetime ends fails with this same reason.
REASON_CHANNEL_PAUSED = "channel-paused"
REASON_CHANNEL_DISCONNECTED = "channel-disconnected"
