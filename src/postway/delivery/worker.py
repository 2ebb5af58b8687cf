"""The delivery worker: claim due deliveries, run them through the pipeline, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from postway.channels.registry import ChannelRegistry
from postway.config import Settings
from postway.delivery import queue
from postway.delivery.pipeline import Pipeline
from postway.metrics import Metrics
from postway.store.db import Database
from postway.store.models import Delivery, utcnow
from postway.store.outage import OutageBackoff, is_outage

log = logging.getLogger("postway.worker")


class Worker:
    def __init__(
        self, db: Database, settings: Settings, registry: ChannelRegistry, metrics: Metrics
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.id = queue.new_worker_id()
        self.pipeline = Pipeline(db, settings, registry, self.id, metrics)
        self._depth_at = 0.0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._outage = OutageBackoff(f"worker {self.id} waits, retrying with backoff", log)

    def wake(self) -> None:
        """New mail was accepted in this process: look now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many deliveries were claimed."""
        claimed = await self._claim(self.settings.worker_batch)
        if claimed:
            await self._process(claimed)
        return len(claimed)

    async def _claim(self, limit: int) -> list[Delivery]:
        async with self.db.session() as s, s.begin():
            return await queue.claim_due(
                s,
                self.id,
                utcnow(),
                limit,
                self.settings.lease_seconds,
                postgres=not self.db.is_sqlite,
            )

    async def _process(self, claimed: list[Delivery]) -> None:
        heartbeat = asyncio.create_task(self._heartbeat([d.id for d in claimed]))
        try:
            await self.pipeline.process(claimed)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _process_quietly(self, claimed: list[Delivery]) -> None:
        """A batch running beside the claim loop: its failure is logged, never raised (its
        deliveries' leases run out and they are tried again; nothing is lost)."""
        try:
            await self._process(claimed)
        except Exception as exc:
            if is_outage(exc):
                log.warning("a batch of %d waits: the database is unavailable", len(claimed))
            else:
                log.exception("processing a batch of %d failed", len(claimed))

    def _room(self) -> int:
        """Deliveries the worker may claim now. Up to two batches' worth are in flight at
        once, counted per delivery, not per batch: a batch is claimed while an earlier one
        still waits on a slow destination, so mail to other destinations is not held up
        behind it (per-destination fairness)."""
        return 2 * self.settings.worker_batch - self.pipeline.in_flight

    async def _heartbeat(self, ids: list[str]) -> None:
        """Renew our leases every third of the lease while the batch is being worked on."""
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                async with self.db.session() as s, s.begin():
                    if await queue.renew(s, self.id, ids, utcnow(), lease) == 0:
                        return
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("lease renewal failed")
                # an outage: our leases stay ours (results are fenced by owner, not by time)

    async def _refresh_depth(self) -> None:
        """Queue depth for /metrics, counted at most every 15 s (a full count is not free)."""
        now = time.monotonic()
        if now - self._depth_at < 15:
            return
        self._depth_at = now
        async with self.db.session() as s, s.begin():
            self.metrics.queue_snapshot = await queue.depth_by_state(s)

    async def run(self) -> None:
        log.info("worker %s started", self.id)
        batches: set[asyncio.Task[None]] = set()
        batch = self.settings.worker_batch
        while not self._stop.is_set():
            self.pipeline.finished.clear()
            room = self._room()
            if room < max(batch // 2, 1):
                # Full: wait until some deliveries finish (claims stay at least half a batch).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.pipeline.finished.wait(), self.settings.worker_poll_seconds
                    )
                continue
            limit = min(batch, room)
            try:
                await self._refresh_depth()
                found = await self._claim(limit)
                if found:
                    task = asyncio.create_task(self._process_quietly(found))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
                # Fewer than asked for: the queue has nothing more due now; wait below.
                claimed = len(found) if len(found) == limit else 0
            except Exception as exc:
                if is_outage(exc):
                    # A wake-up ends the wait early: it comes only after the web process
                    # committed new mail, so the database is back.
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._outage.failed(exc))
                    continue
                log.exception("queue poll failed; retrying")
                claimed = 0
            else:
                self._outage.succeeded()
            if claimed == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_seconds)
        if batches:  # let the batches under way finish and record their outcomes
            await asyncio.gather(*batches)
        log.info("worker %s stopped", self.id)
