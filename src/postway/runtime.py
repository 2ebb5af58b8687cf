"""The composition root: builds settings, store, channels and the worker, and hands them down.

No module keeps global state; the CLI, the web app and the tests all build one of these.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from postway.channels.base import Channel
from postway.channels.registry import ChannelRegistry
from postway.config import Settings
from postway.delivery.worker import Worker
from postway.metrics import Metrics
from postway.security import SecretBox

if TYPE_CHECKING:
    from postway.demo import LocalInbox
from postway.store.db import Database


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.box = SecretBox(settings.resolved_secret_key())
        self.metrics = Metrics()
        self.registry = ChannelRegistry(settings, self.box, managed=self._managed_channel)
        self._worker: Worker | None = None
        self.public_url = settings.resolved_base_url()
        self.inbox: LocalInbox | None = None  # demo mode only

    def _managed_channel(self) -> Channel:
        from postway.channels.managed import ManagedChannel

        s = self.settings
        return ManagedChannel(
            s,
            tls_mode="require" if s.mta_require_tls else "opportunistic",
            max_connections=s.mta_max_connections,
            max_messages=s.mta_max_messages_per_session,
        )

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            self._worker = Worker(self.db, self.settings, self.registry, self.metrics)
        return self._worker

    def wake_worker(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    async def start(self) -> None:
        logging.getLogger("postway").setLevel(self.settings.log_level.upper())
        await self.db.upgrade()

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        await self.registry.aclose()
        await self.db.dispose()
