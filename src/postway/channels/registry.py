"""The table of channel modules, and finding the channel object for a stored message.

The only place that maps channel names to modules. Each module (`channels/<name>.py`)
describes itself with a `ChannelModule`: its provider limits, settings schema, connection
check and, for API channels, the provider of the connected account it sends through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels import gmail, managed, smtp
from postway.channels.base import AccountView, Channel, ChannelModule, OutboundMessage, Outcome
from postway.channels.google_api import GoogleApi
from postway.config import Settings
from postway.domain.states import REASON_CHANNEL_DISCONNECTED, ChannelName, DeliveryState
from postway.domain.throttle import Limits
from postway.errors import ChannelError
from postway.security import SecretBox
from postway.store.accounts import StoredAccounts, account_of, view_of
from postway.store.channel_settings import effective_setting, relay_of
from postway.store.models import Identity, Message

log = logging.getLogger("postway.channels")

MODULES: dict[ChannelName, ChannelModule] = {
    ChannelName.MANAGED: managed.MODULE,
    ChannelName.GMAIL: gmail.MODULE,
    ChannelName.SMTP: smtp.MODULE,
}


@dataclass(frozen=True, slots=True)
class Route:
    channel: Channel
    setting_id: str | None  # the settings row to flag when the channel needs attention
    provider_limits: Limits = Limits()  # the provider's published per-mailbox limits
    # For channels that send through a connected account: True, and the account (None when
    # the user has none connected), read when the batch was loaded.
    needs_account: bool = False
    account: AccountView | None = None


class _NotConnected:
    """Stands in for an API channel whose user has no account connected. The pipeline's
    `check_account` parks such mail before any channel is asked; this answers the same if
    it ever is."""

    name = ChannelName.GMAIL.value

    async def deliver(self, message: OutboundMessage) -> list[Outcome]:
        return [
            Outcome(
                r.delivery_id,
                r.address,
                DeliveryState.DEFERRED,
                reason=REASON_CHANNEL_DISCONNECTED,
                diagnostic="no Gmail account is connected",
            )
            for r in message.recipients
        ]

    async def aclose(self) -> None:
        return None


class ChannelRegistry:
    def __init__(
        self,
        settings: Settings,
        box: SecretBox,
        managed: Callable[[], Channel] | None = None,
        *,
        accounts: StoredAccounts | None = None,
        google: Callable[[], GoogleApi] | None = None,
    ) -> None:
        self.settings = settings
        self.box = box
        self.accounts = accounts
        self._managed_factory = managed
        self._managed: Channel | None = None
        self._google = google
        # account id -> (account version, channel): one client per account, rebuilt (and the
        # old one closed) when the account changes (reconnected, paused, resumed...)
        self._clients: dict[str, tuple[int, gmail.GmailChannel]] = {}
        # custom relays' sessions, kept across messages (one connect, TLS and AUTH for many)
        self.relay_sessions = smtp.RelaySessions(
            settings.relay_max_connections, settings.relay_max_messages_per_session
        )

    def managed(self) -> Channel:
        if self._managed is None:
            if self._managed_factory is None:
                raise ChannelError("the managed channel is not available in this process")
            self._managed = self._managed_factory()
        return self._managed

    async def route(self, db: AsyncSession, message: Message) -> Route:
        """The channel for `message`, as chosen when it was accepted; relay settings and
        account state are read now, so a corrected password or a reconnected account takes
        effect on the next try."""
        name = ChannelName(message.channel)
        module = MODULES[name]
        if name is ChannelName.MANAGED:
            return Route(self.managed(), None, module.limits())
        if name is ChannelName.SMTP:
            identity = await db.get(Identity, message.identity_id) if message.identity_id else None
            if identity is None:
                raise ChannelError("the message's identity no longer exists")
            _, row = await effective_setting(db, identity)
            if row is None or not row.smtp_host:
                raise ChannelError("no SMTP relay is configured for this sender")
            relay = relay_of(row, self.box)
            return Route(
                smtp.SmtpChannel(relay, self.settings, self.relay_sessions),
                row.id,
                module.limits(relay_host=relay.host),
            )
        # an API channel: the user's connected account
        account_row = await account_of(db, message.user_id, module.account_provider or "")
        if account_row is None:
            return Route(_NotConnected(), None, module.limits(), needs_account=True)
        account = view_of(account_row)
        return Route(await self._client(account), None, module.limits(), True, account)

    async def _client(self, account: AccountView) -> gmail.GmailChannel:
        cached = self._clients.get(account.id)
        if cached is not None and cached[0] == account.version:
            return cached[1]
        if self.accounts is None or self._google is None:
            raise ChannelError("the Gmail channel is not available in this process")
        if cached is not None:
            await self._close(cached[1])
        channel = gmail.build(self._google, self.accounts, account)
        self._clients[account.id] = (account.version, channel)
        return channel

    async def forget(self, account_id: str) -> None:
        """Close the client of an account that was disconnected or replaced."""
        cached = self._clients.pop(account_id, None)
        if cached is not None:
            await self._close(cached[1])

    @staticmethod
    async def _close(channel: Channel) -> None:
        try:
            await channel.aclose()
        except Exception:  # closing an idle HTTP client; nothing is lost if it fails
            log.exception("closing a channel client failed")

    async def aclose(self) -> None:
        if self._managed is not None:
            await self._managed.aclose()
        await self.relay_sessions.aclose()
        for _, channel in list(self._clients.values()):
            await self._close(channel)
        self._clients.clear()
