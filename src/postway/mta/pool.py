"""Reusable SMTP sessions per destination server, with connection limits and MX fallback.

A destination is one server address and port. Sessions to it are kept open between messages
(RSET before each reuse, in one write with the next MAIL when the server offers PIPELINING),
retired after `max_messages` transactions, and closed after `idle_seconds` unused. At most
`max_connections` sessions to one destination exist at once, idle ones included; callers
beyond that wait for one to come free.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

from postway.errors import PostwayError
from postway.mta.resolver import MailHost, Route
from postway.mta.smtp_client import (
    ConnectFailed,
    NotSupported,
    ResetFailed,
    SmtpSession,
    Timeouts,
    TlsMode,
    TransactionResult,
    WireMessage,
)

Destination = tuple[str, int]  # (address, port)


@dataclass(frozen=True)
class PoolConfig:
    helo_name: str = "localhost"
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls_mode: TlsMode = "opportunistic"
    tls_ctx: ssl.SSLContext | None = None
    max_connections: int = 10  # per destination
    max_messages: int = 100  # per session
    idle_seconds: float = 5.0


@dataclass
class Attempt:
    """A transaction that happened, and where."""

    result: TransactionResult
    host: str
    address: str
    tls: bool
    reused: bool


class NoServerReached(PostwayError):
    """Every server of the route failed before a transaction could start."""

    def __init__(self, route: Route, errors: list[ConnectFailed]) -> None:
        last = errors[-1] if errors else None
        tried = ", ".join(f"{e.host}" for e in errors) or "none"
        super().__init__(
            f"no mail server of {route.domain} could be reached (tried {tried})"
            + (f": {last}" if last else "")
        )
        self.errors = errors


class _Slot:
    """Sessions of one destination: the idle ones, and how many exist in all."""

    def __init__(self) -> None:
        self.idle: list[SmtpSession] = []
        self.count = 0
        self.freed = asyncio.Condition()


class SessionPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._slots: dict[Destination, _Slot] = {}
        self._plaintext: set[Destination] = set()  # opportunistic TLS failed there
        self._reaper: asyncio.Task[None] | None = None
        self.sessions_opened = 0

    async def deliver(
        self,
        route: Route,
        mail_from: str,
        recipients: list[str],
        message: bytes | WireMessage,
        *,
        smtputf8: bool = False,
    ) -> Attempt:
        """Run one transaction on the first server of `route` that takes a session.

        Invariant: servers are tried in route order (MX preference), each of a server's
        addresses in turn; a server is skipped only when no session could be set up with it
        (refused, unreachable, timed out, 4xx/5xx greeting or EHLO, TLS required but absent).
        Once a transaction has started its result, or its failure, is final for this attempt.
        Raises NoServerReached, or the session's ConnectionLost/OutcomeUnknown/NotSupported.
        """
        errors: list[ConnectFailed] = []
        for host in route.hosts:
            for address in host.addresses:
                dest = (address, host.port)
                # A reused session that fails its RSET is replaced and the transaction run
                # again: nothing of it reached the server. Fresh sessions owe no RSET, so this
                # ends after the idle sessions (at most max_connections) are used up.
                for _ in range(self.config.max_connections + 1):
                    try:
                        session, reused = await self._acquire(host, dest)
                    except ConnectFailed as exc:
                        errors.append(exc)
                        break
                    ok = False
                    try:
                        result = await session.transaction(
                            mail_from, recipients, message, smtputf8=smtputf8
                        )
                        ok = True
                    except ResetFailed:
                        continue
                    except NotSupported:
                        ok = True  # nothing was sent; the session serves other messages
                        raise
                    finally:
                        await self._release(dest, session, reusable=ok)
                    return Attempt(result, host.name, address, session.tls, reused)
        raise NoServerReached(route, errors)

    async def _acquire(self, host: MailHost, dest: Destination) -> tuple[SmtpSession, bool]:
        slot = self._slots.setdefault(dest, _Slot())
        async with slot.freed:
            while True:
                await self._prune(slot)
                while slot.idle:
                    session = slot.idle.pop()
                    if await session.prepare_reuse():
                        return session, True
                    slot.count -= 1  # stale: the server closed it meanwhile
                if slot.count < self.config.max_connections:
                    slot.count += 1
                    break
                await slot.freed.wait()
        try:
            return await self._open(host, dest), False
        except BaseException:
            async with slot.freed:
                slot.count -= 1
                slot.freed.notify()
            raise

    async def _open(self, host: MailHost, dest: Destination) -> SmtpSession:
        cfg = self.config
        mode: TlsMode = "off" if dest in self._plaintext else cfg.tls_mode
        try:
            session = await SmtpSession.open(
                host.name, dest[0], dest[1], helo_name=cfg.helo_name, timeouts=cfg.timeouts,
                tls_mode=mode, tls_ctx=cfg.tls_ctx,
            )  # fmt: skip
        except ConnectFailed as exc:
            if not (exc.tls_failed and mode == "opportunistic"):
                raise
            # Like Postfix: a broken handshake in opportunistic mode falls back to plaintext.
            self._plaintext.add(dest)
            session = await SmtpSession.open(
                host.name, dest[0], dest[1], helo_name=cfg.helo_name, timeouts=cfg.timeouts,
                tls_mode="off",
            )  # fmt: skip
        self.sessions_opened += 1
        return session

    async def _release(self, dest: Destination, session: SmtpSession, reusable: bool) -> None:
        slot = self._slots[dest]
        keep = reusable and session.alive and session.transactions < self.config.max_messages
        if keep:
            session.last_used = time.monotonic()
        else:
            await _quietly_quit(session)
        async with slot.freed:
            if keep:
                slot.idle.append(session)
            else:
                slot.count -= 1
            slot.freed.notify()
        if keep and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.create_task(self._reap())

    async def _prune(self, slot: _Slot) -> None:
        """Close idle sessions past their idle time (caller holds slot.freed)."""
        now = time.monotonic()
        stale = [s for s in slot.idle if now - s.last_used >= self.config.idle_seconds]
        if not stale:
            return
        slot.idle = [s for s in slot.idle if s not in stale]
        slot.count -= len(stale)
        for s in stale:
            await _quietly_quit(s)
        slot.freed.notify(len(stale))

    async def _reap(self) -> None:
        while any(slot.idle for slot in self._slots.values()):
            await asyncio.sleep(self.config.idle_seconds / 2)
            for slot in list(self._slots.values()):
                async with slot.freed:
                    await self._prune(slot)

    def idle_count(self) -> int:
        return sum(len(s.idle) for s in self._slots.values())

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for slot in self._slots.values():
            async with slot.freed:
                idle, slot.idle = slot.idle, []
                slot.count -= len(idle)
            for s in idle:
                await _quietly_quit(s)
        self._slots.clear()


async def _quietly_quit(session: SmtpSession) -> None:
    # QUIT is a courtesy: a short wait, and never an error for the caller.
    try:
        async with asyncio.timeout(min(session.timeouts.quit, 5.0)):
            await session.quit()
    except (TimeoutError, OSError):
        session.close()
