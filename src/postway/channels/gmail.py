"""The Gmail channel: a rep's one connected Gmail account, through the Gmail API.

Recipients come from the message's headers, not an envelope (Gmail sends to every address in
To, Cc and Bcc of the raw message). So:
- the recipients named in To/Cc that are to be sent now go in one message whose To/Cc are
  rewritten to name only them (others may be suppressed, blocked, already sent or waiting);
- every Bcc recipient (a recipient not named in To/Cc) gets a message of its own, with To
  and Cc emptied and only its own address in Bcc, which Gmail removes from what it delivers:
  no Bcc address is ever shown to anyone, and no To/Cc recipient gets a second copy.

Outcomes: accepted mail is `sent` with Gmail's message and thread ids in the event. A reply
(a message whose In-Reply-To or References names a message sent through the same account)
is sent into that message's Gmail thread. Rate limits and Google's server errors defer;
the daily quota pauses the account until the quota window passes (`quota_resets_at`); a 401
is answered by refreshing the access token and sending again, once; a refused grant (or a
second 401) marks the account `needs_reconnect`; both park the mail without spending
attempts (see the pipeline's `check_account`), so nothing bounces or is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from postway.channels.base import (
    AccountAccess,
    AccountNeedsReconnect,
    AccountView,
    ChannelModule,
    OutboundMessage,
    Outcome,
    Recipient,
)
from postway.channels.google_api import (
    GMAIL_MAX_MESSAGE,
    GoogleApi,
    GoogleAuthError,
    GoogleDailyLimit,
    GoogleError,
    GoogleInvalidRequest,
    GoogleRateLimited,
    GoogleTooLarge,
)
from postway.domain.addresses import ascii_form
from postway.domain.states import (
    REASON_CHANNEL_DISCONNECTED,
    REASON_CHANNEL_PAUSED,
    ChannelName,
    DeliveryState,
)
from postway.domain.throttle import Limits
from postway.domain.visible_recipients import restrict_visible_recipients, visible_recipients
from postway.errors import ChannelError, InvalidInput

PROVIDER = "google"
GMAIL_DAILY = 2000  # Google's published sending limit per Gmail / Workspace user and day
REMOTE = "gmail.googleapis.com"
PACIFIC = ZoneInfo("America/Los_Angeles")


def quota_resets_at(now: datetime, retry_after: float | None = None) -> datetime:
    """When a used-up daily quota is back: the time Google named, else the next midnight in
    Pacific time (when Gmail's daily counters roll over), at least an hour from now."""
    if retry_after:
        return now + timedelta(seconds=retry_after)
    local = now.astimezone(PACIFIC)
    midnight = datetime(local.year, local.month, local.day, tzinfo=PACIFIC) + timedelta(days=1)
    return max(midnight.astimezone(UTC), now + timedelta(hours=1))


class GmailSettings(BaseModel):
    """The Gmail channel's own settings: whether the mailbox is scanned for bounces."""

    bounce_scanning: bool = False


def gmail_limits(**_: object) -> Limits:
    return Limits(daily_cap=GMAIL_DAILY)


class _Parked(Exception):
    """Stop sending this message: the account is paused or needs reconnecting."""

    def __init__(self, reason: str, words: str, retry_after: float | None = None) -> None:
        super().__init__(words)
        self.reason = reason
        self.retry_after = retry_after  # seconds until the pause ends; None: until released


class GmailChannel:
    """One connected account. Built and cached per account by the registry, and closed
    (its HTTP client with it) when the account's state changes."""

    name = ChannelName.GMAIL.value

    def __init__(self, api: GoogleApi, accounts: AccountAccess, account: AccountView) -> None:
        self.api = api
        self.accounts = accounts
        self.account = account
        # Set once the account was paused or must be reconnected during this client's life:
        # later messages of the same batch park at once instead of asking Google again.
        # (The registry builds a new client when the account's state changes.)
        self._stopped: _Parked | None = None

    async def aclose(self) -> None:
        await self.api.aclose()

    async def deliver(self, message: OutboundMessage) -> list[Outcome]:
        headers = _headers(message.raw)
        try:
            visible_to, visible_cc = visible_recipients(message.raw)
        except InvalidInput as exc:
            return _all(
                list(message.recipients), state=DeliveryState.FAILED, reason="channel-error",
                diagnostic=f"the stored message cannot be sent through Gmail: {exc}",
            )  # fmt: skip
        shown = {_key(a) for a in (*visible_to, *visible_cc)}
        now_to = [r for r in message.recipients if _key(r.address) in shown]
        bcc = [r for r in message.recipients if _key(r.address) not in shown]
        keep = {_key(r.address) for r in now_to}

        sends: list[tuple[list[Recipient], bytes]] = []
        if now_to:
            if keep == shown:
                raw = message.raw
            else:
                raw = restrict_visible_recipients(
                    message.raw,
                    to=[a for a in visible_to if _key(a) in keep],
                    cc=[a for a in visible_cc if _key(a) in keep],
                )
            sends.append((now_to, raw))
        for r in bcc:
            sends.append(([r], restrict_visible_recipients(message.raw, [], [], [r.address])))

        thread = await self.accounts.thread_of(self.account.id, _replied_to(headers))
        message_id = (headers.get("message-id") or "").strip()
        outcomes: list[Outcome] = []
        parked = self._stopped
        for group, raw in sends:
            if parked is None:
                try:
                    outcomes.extend(await self._send(group, raw, thread, message_id))
                    continue
                except _Parked as p:
                    parked = self._stopped = p
            outcomes.extend(_park(group, parked))
        return outcomes

    async def _send(
        self, group: list[Recipient], raw: bytes, thread: str | None, message_id: str
    ) -> list[Outcome]:
        if len(raw) > GMAIL_MAX_MESSAGE:
            return _all(
                group,
                state=DeliveryState.FAILED,
                reason="mesgtoobig",
                hard=True,
                diagnostic=f"the message is {len(raw) / 1048576:.1f} MB; Gmail sends at most "
                "25 MB (attachments included); send the large files as links instead",
            )
        try:
            token = await self.accounts.fresh_token(self.account.id)
            try:
                sent = await self.api.send(token, raw, thread_id=thread)
            except GoogleAuthError as exc:
                if exc.status != 401:
                    raise
                # Google's advice for 401: refresh the access token (it may have ended early,
                # or our clock be behind) and try again; only a refused refresh needs the user.
                token = await self.accounts.fresh_token(self.account.id, refused=token)
                sent = await self.api.send(token, raw, thread_id=thread)
        except AccountNeedsReconnect as exc:  # the grant is gone (the refresh was refused)
            words = f"{exc}; connect the account again"
            raise _Parked(REASON_CHANNEL_DISCONNECTED, words) from exc
        except GoogleAuthError as exc:
            words = f"Google refused the account's access ({exc}); connect the account again"
            await self.accounts.mark_needs_reconnect(self.account.id, words)
            raise _Parked(REASON_CHANNEL_DISCONNECTED, words) from exc
        except GoogleDailyLimit as exc:
            until = quota_resets_at(datetime.now(UTC), exc.retry_after)
            words = (
                f"Gmail's daily sending quota of {self.account.address} is used up; "
                f"sending resumes at {until:%Y-%m-%d %H:%M} UTC"
            )
            await self.accounts.pause_until(self.account.id, until, words)
            wait = (until - datetime.now(UTC)).total_seconds()
            raise _Parked(REASON_CHANNEL_PAUSED, words, max(wait, 0.0)) from exc
        except GoogleTooLarge as exc:
            return _all(
                group, state=DeliveryState.FAILED, reason="mesgtoobig", hard=True,
                diagnostic=str(exc),
            )  # fmt: skip
        except GoogleRateLimited as exc:
            return _all(
                group, state=DeliveryState.DEFERRED, reason="speeding", diagnostic=str(exc),
                retry_after=exc.retry_after, status=_status(exc),
            )  # fmt: skip
        except GoogleInvalidRequest as exc:
            return _all(
                group, state=DeliveryState.FAILED, reason="rejected", diagnostic=str(exc),
                status=_status(exc), reply_code=exc.status,
            )  # fmt: skip
        except GoogleError as exc:  # 5xx, network, or Postway's own client credentials
            return _all(
                group, state=DeliveryState.DEFERRED, reason="systemerror", diagnostic=str(exc),
                retry_after=exc.retry_after, reply_code=exc.status,
            )  # fmt: skip
        except ChannelError as exc:  # a token refresh that failed for now
            return _all(
                group, state=DeliveryState.DEFERRED, reason="systemerror", diagnostic=str(exc)
            )
        if message_id:
            await self.accounts.remember_thread(self.account.id, message_id, sent.thread_id)
        return _all(
            group,
            state=DeliveryState.SENT,
            diagnostic=f"accepted by Gmail for {self.account.address}",
            detail={"gmail_id": sent.id, "thread_id": sent.thread_id},
        )


def _status(exc: GoogleError) -> str | None:
    return exc.reason[:16] if exc.reason else None


def _all(group: list[Recipient], **fields: Any) -> list[Outcome]:
    return [
        Outcome(delivery_id=r.delivery_id, recipient=r.address, remote_mta=REMOTE, **fields)
        for r in group
    ]


def _park(group: list[Recipient], parked: _Parked) -> list[Outcome]:
    return _all(
        group,
        state=DeliveryState.DEFERRED,
        reason=parked.reason,
        diagnostic=str(parked),
        retry_after=parked.retry_after,
    )


def _headers(raw: bytes) -> dict[str, str]:
    """The header fields the channel needs, as Postway rendered them (lower-cased names)."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return {
        name: str(parsed.get(name, ""))
        for name in ("message-id", "in-reply-to", "references")
        if parsed.get(name) is not None
    }


def _key(address: str) -> str:
    try:
        return ascii_form(address).lower()
    except InvalidInput:
        return address.lower()


def _replied_to(headers: dict[str, str]) -> list[str]:
    """Message-IDs this message answers, nearest first (In-Reply-To, then References from
    the newest)."""
    ids = headers.get("in-reply-to", "").split()
    ids += list(reversed(headers.get("references", "").split()))
    return [i for i in ids if i.startswith("<") and i.endswith(">")]


def build(
    api_factory: Callable[[], GoogleApi], accounts: AccountAccess, account: AccountView
) -> GmailChannel:
    return GmailChannel(api_factory(), accounts, account)


async def check(channel: GmailChannel) -> tuple[bool, str]:
    """Connection check: a fresh token and the account's address as Google knows it."""
    try:
        token = await channel.accounts.fresh_token(channel.account.id)
        address = await channel.api.userinfo_email(token)
    except (GoogleError, ChannelError) as exc:
        return False, str(exc)
    return True, f"connected to Gmail as {address}"


MODULE = ChannelModule(
    name=ChannelName.GMAIL.value,
    limits=gmail_limits,
    settings_schema=GmailSettings,
    check=check,
    account_provider=PROVIDER,
)
