"""Group commit: sends that arrive together are stored in one write transaction.

A request is checked and built on its own, outside any lock, from cached facts (who owns the
token, the identity's context); then it waits here. One task takes whatever gathered while
the previous group was being handled and reads those facts again, once per distinct token
and identity, in a snapshot taken after every request of the group arrived, so a token
revoked or an identity changed a moment ago is honoured: a request whose facts changed is
rebuilt from the fresh ones or refused. Then the group is written in a transaction that holds
only its INSERTs; the next group is checked meanwhile. Every
message goes out with one INSERT per table, and each request is answered only after the
commit: a 202 still means stored. A group that fails to commit is retried one request per
transaction, so one bad request cannot take the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postway.config import Settings
from postway.delivery.send_cache import SendCache
from postway.delivery.submit import (
    Accepted,
    Prepared,
    Rows,
    SendContext,
    SendRequest,
    build_prepared,
    load_context,
)
from postway.errors import AuthenticationFailed, NotStored, PostwayError
from postway.store.db import Database
from postway.store.models import utcnow
from postway.store.outage import OutageBackoff, is_outage, unavailable
from postway.store.users import TokenOwner, owners_of_tokens, touch_tokens

log = logging.getLogger("postway.api")

T = TypeVar("T")
MAX_GROUP = 256  # requests in one transaction; more wait for the next one


@dataclass(slots=True)
class Pending:
    token_hash: str
    owner: TokenOwner
    ctx: SendContext
    req: SendRequest
    prepared: Prepared
    answer: asyncio.Future[Accepted]


class GroupCommit:
    def __init__(self, db: Database, settings: Settings, cache: SendCache) -> None:
        self.db = db
        self.settings = settings
        self.cache = cache
        self._queue: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed (tests read it)
        self._outage = OutageBackoff("new mail is answered 503 with Retry-After", log)

    async def submit(
        self, token_hash: str, owner: TokenOwner, ctx: SendContext, req: SendRequest, p: Prepared
    ) -> Accepted:
        answer: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(token_hash, owner, ctx, req, p, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        # a client that goes away does not cancel the write: its message is stored anyway
        return await asyncio.shield(answer)

    async def aclose(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def _write_all(self) -> None:
        # Two stages: while one group is being written, the next is checked, so the write
        # transaction (SQLite's single writer lock) holds only the INSERTs.
        writing: asyncio.Task[None] | None = None
        while self._queue or writing is not None:
            checked = None
            if self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                checked = await self._guarded(group, self._check(group))
            if writing is not None:
                await writing
                writing = None
            if checked is not None:
                writing = asyncio.create_task(
                    self._guarded(checked.group, self._write(checked), writes=True)
                )

    async def _guarded(
        self, group: list[Pending], step: Awaitable[T], *, writes: bool = False
    ) -> T | None:
        try:
            done = await step
        except Exception as exc:  # never leave a request waiting
            if is_outage(exc):  # e.g. the server refusing connections, a full disk
                self._outage.failed(exc)  # one log line per minute of outage, not per request
                _fail_all(group, unavailable())
            elif isinstance(exc, DBAPIError):
                log.error("the database could not take %d messages: %s", len(group), exc.orig)
                _fail_all(group, NotStored(f"the messages could not be stored: {exc.orig}"))
            else:
                log.exception("storing a group of %d messages failed", len(group))
                _fail_all(group, exc)
            return None
        if writes:  # a read may work while writes cannot (a full disk): only a write says
            self._outage.succeeded()
        return done

    async def _check(self, group: list[Pending]) -> Checked:
        """Read again, in a snapshot taken after every request of the group arrived, who owns
        each token and what each identity sends as; build the rows of what may be stored."""
        async with self.db.reader() as s, s.begin():
            return await self._rows(s, group)

    async def _write(self, checked: Checked) -> None:
        try:
            async with self.db.session() as s, s.begin():
                await checked.rows.insert(s)
                await touch_tokens(s, checked.touched, checked.now)
        except IntegrityError as exc:
            # the database's words only: the statement's parameters hold the mail itself
            words = str(exc.orig)
            group = checked.group
            if len(group) == 1:
                _fail_all(group, NotStored(f"the message could not be stored: {words}"))
                return
            log.warning("a group of %d was refused (%s); storing one at a time", len(group), words)
            for item in group:
                one = await self._guarded([item], self._check([item]))
                if one is not None:
                    await self._guarded([item], self._write(one), writes=True)
            return
        self.groups += 1
        for item, outcome in checked.outcomes:
            if item.answer.done():
                continue
            if isinstance(outcome, Accepted):
                item.answer.set_result(outcome)
            else:
                item.answer.set_exception(outcome)

    async def _rows(self, s: AsyncSession, group: list[Pending]) -> Checked:
        owners = await owners_of_tokens(s, {item.token_hash for item in group})
        contexts: dict[tuple[str, str], SendContext | PostwayError] = {}
        rows, now = Rows(), utcnow()
        outcomes: list[tuple[Pending, Accepted | PostwayError]] = []
        for item in group:
            owner = owners[item.token_hash]
            if isinstance(owner, AuthenticationFailed):
                self.cache.owners.drop(item.token_hash)
                outcomes.append((item, owner))
                continue
            key = (owner.principal.user_id, item.ctx.identity_id)
            if key not in contexts:
                try:
                    contexts[key] = await load_context(s, owner.principal, item.ctx.identity_id)
                except PostwayError as exc:
                    contexts[key] = exc
            ctx = contexts[key]
            if isinstance(ctx, PostwayError):
                self.cache.contexts.drop(key)
                outcomes.append((item, ctx))
                continue
            prepared = item.prepared
            if ctx != item.ctx:  # changed since it was cached: build from what is true now
                try:
                    prepared = build_prepared(ctx, self.settings, item.req)
                except PostwayError as exc:
                    outcomes.append((item, exc))
                    continue
            outcomes.append((item, rows.add(self.settings, owner.principal, prepared, now)))
        touched = {
            o.token_id for o in owners.values() if isinstance(o, TokenOwner) and o.needs_touch(now)
        }
        for token, o in owners.items():
            if isinstance(o, TokenOwner):
                if o.token_id in touched:
                    o = TokenOwner(o.principal, o.token_id, now)
                self.cache.owners.put(token, o)
        for key, c in contexts.items():
            if isinstance(c, SendContext):
                self.cache.contexts.put(key, c)
        return Checked(group, rows, outcomes, touched, now)


@dataclass(slots=True)
class Checked:
    """A group after its check: the rows to insert and each request's answer-to-be."""

    group: list[Pending]
    rows: Rows
    outcomes: list[tuple[Pending, Accepted | PostwayError]]
    touched: set[str]  # tokens whose last use is recorded with this group
    now: datetime


def _fail_all(group: list[Pending], exc: BaseException) -> None:
    for item in group:
        if not item.answer.done():
            item.answer.set_exception(exc)
