"""Finds the channel object for a stored message. The only place that knows channel names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import Channel
from postway.channels.smtp import SmtpChannel
from postway.config import Settings
from postway.domain.states import ChannelName
from postway.domain.throttle import Limits, provider_limits
from postway.errors import ChannelError
from postway.security import SecretBox
from postway.store.channel_settings import effective_setting, relay_of
from postway.store.models import Identity, Message


@dataclass(frozen=True, slots=True)
class Route:
    channel: Channel
    setting_id: str | None  # the settings row to flag when the channel needs attention
    provider_limits: Limits = Limits()  # the provider's published per-mailbox limits


class ChannelRegistry:
    def __init__(
        self,
        settings: Settings,
        box: SecretBox,
        managed: Callable[[], Channel] | None = None,
    ) -> None:
        self.settings = settings
        self.box = box
        self._managed_factory = managed
        self._managed: Channel | None = None

    def managed(self) -> Channel:
        if self._managed is None:
            if self._managed_factory is None:
                raise ChannelError("the managed channel is not available in this process")
            self._managed = self._managed_factory()
        return self._managed

    async def route(self, db: AsyncSession, message: Message) -> Route:
        """The channel for `message`, as chosen when it was accepted; relay settings are read
        now, so a corrected password takes effect on the next retry."""
        name = ChannelName(message.channel)
        if name is ChannelName.MANAGED:
            return Route(self.managed(), None)
        if name is ChannelName.SMTP:
            identity = await db.get(Identity, message.identity_id) if message.identity_id else None
            if identity is None:
                raise ChannelError("the message's identity no longer exists")
            _, row = await effective_setting(db, identity)
            if row is None or not row.smtp_host:
                raise ChannelError("no SMTP relay is configured for this sender")
            relay = relay_of(row, self.box)
            return Route(
                SmtpChannel(relay, self.settings), row.id, provider_limits(name.value, relay.host)
            )
        raise ChannelError(f"the {name.value} channel is not connected")

    async def aclose(self) -> None:
        if self._managed is not None:
            await self._managed.aclose()
