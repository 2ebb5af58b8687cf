"""The composition root: builds settings, store, channels and the worker, and hands them down.

No module keeps global state; the CLI, the web app and the tests all build one of these.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from postway.channels.base import AccountNeedsReconnect, Channel
from postway.channels.google_api import GoogleApi, GoogleAuthError, GoogleError
from postway.channels.registry import ChannelRegistry
from postway.config import Settings
from postway.delivery.group_commit import GroupCommit
from postway.delivery.send_cache import SendCache
from postway.delivery.worker import Worker
from postway.errors import ChannelError
from postway.metrics import Metrics
from postway.security import SecretBox
from postway.store.accounts import NewTokens, StoredAccounts
from postway.wake import WakeSender

if TYPE_CHECKING:
    from postway.demo import LocalInbox
from postway.store.db import Database


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.box = SecretBox(settings.resolved_secret_key())
        self.metrics = Metrics()
        self._google_api: GoogleApi | None = None
        # connected accounts: state and fresh tokens for API channels (they never see the db)
        self.accounts = StoredAccounts(self.db, self.box, {"google": self._refresh_google})
        self.registry = ChannelRegistry(
            settings,
            self.box,
            managed=self._managed_channel,
            accounts=self.accounts,
            google=self.new_google_api,
        )
        self._worker: Worker | None = None
        self.send_cache = SendCache()
        self.wake_sender: WakeSender | None = None
        self.group_commit = GroupCommit(self.db, settings, self.send_cache)
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

    def new_google_api(self) -> GoogleApi:
        """A Google client with its own connections (one per connected account's channel)."""
        s = self.settings
        return GoogleApi(
            client_id=s.google_client_id,
            client_secret=s.google_client_secret,
            base_url=s.google_base_url or None,
        )

    @property
    def google(self) -> GoogleApi:
        """The shared Google client for connecting, refreshing and revoking."""
        if self._google_api is None:
            self._google_api = self.new_google_api()
        return self._google_api

    async def _refresh_google(self, refresh_token: str) -> NewTokens:
        try:
            t = await self.google.refresh(refresh_token)
        except GoogleAuthError as exc:
            raise AccountNeedsReconnect(
                f"Google no longer accepts Postway's access to this account ({exc})"
            ) from exc
        except GoogleError as exc:
            raise ChannelError(f"refreshing the Google token failed for now: {exc}") from exc
        return NewTokens(t.access_token, t.refresh_token, t.expires_at, t.scopes)

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            self._worker = Worker(self.db, self.settings, self.registry, self.metrics)
        return self._worker

    def wake_worker(self) -> None:
        if self._worker is not None:
            self._worker.wake()
        if self.wake_sender is not None:  # workers in other processes (`postway serve`)
            self.wake_sender.wake()

    async def start(self) -> None:
        logging.getLogger("postway").setLevel(self.settings.log_level.upper())
        await self.db.upgrade()

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        await self.group_commit.aclose()
        await self.registry.aclose()
        if self._google_api is not None:
            await self._google_api.aclose()
        await self.db.dispose()
