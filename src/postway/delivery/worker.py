"""The delivery worker: claim due deliveries, run them through the pipeline, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from postway.channels.registry import ChannelRegistry
from postway.config import Settings
from postway.delivery import queue
from postway.delivery.pipeline import Pipeline
from postway.store.db import Database
from postway.store.models import utcnow

log = logging.getLogger("postway.worker")


class Worker:
    def __init__(self, db: Database, settings: Settings, registry: ChannelRegistry) -> None:
        self.db = db
        self.settings = settings
        self.id = queue.new_worker_id()
        self.pipeline = Pipeline(db, settings, registry, self.id)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New mail was accepted in this process: look now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many deliveries were claimed."""
        async with self.db.session() as s, s.begin():
            claimed = await queue.claim_due(
                s,
                self.id,
                utcnow(),
                self.settings.worker_batch,
                self.settings.lease_seconds,
                postgres=not self.db.is_sqlite,
            )
        if claimed:
            await self.pipeline.process(claimed)
        return len(claimed)

    async def run(self) -> None:
        log.info("worker %s started", self.id)
        while not self._stop.is_set():
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("queue poll failed; retrying")
                claimed = 0
            if claimed == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_seconds)
        log.info("worker %s stopped", self.id)
