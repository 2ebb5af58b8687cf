"""The bounce intake: an SMTP server (aiosmtpd) for the bounce domain, the MX of VERP addresses.

Never an open relay: RCPT is accepted only for a signed VERP address of the bounce domain
(its MAC verifies) or the configured feedback-loop address; everything else gets 550 at RCPT,
before any content is read.

Limits, so one client cannot hold the intake or fill the disk: SIZE (advertised and enforced),
concurrent connections overall and per client address (IPv6: its /64), an overall session
deadline, a budget of commands that carry no mail (NOOP, RSET, HELO/EHLO, HELP, VRFY, EXPN)
between two messages, recipients per message, and daily quotas per client (reports and bytes
stored); RFC 5321 line and command lengths are aiosmtpd's. Over a limit: 421 and the line is
closed, or 452 where the sender should simply retry later.

Durability: each accepted message is stored raw (once, however many recipients) and committed
before DATA is answered 250; processing runs afterwards, off the SMTP session, and rows a crash
left unprocessed are picked up when the intake starts again. Raw messages older than
`bounce_retention_days` are deleted at start and every hour; what they did stays recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from postway.bounces.apply import process_bounce, process_pending
from postway.bounces.storage import peer_key, prune_bounce_bodies, quota_refusal, store_bounce
from postway.config import Settings
from postway.errors import PostwayError
from postway.mta.verp import parse_return_path
from postway.store.db import Database

log = logging.getLogger("postway.bounces")

IDLE_TIMEOUT = 300.0  # RFC 5321 4.5.3.2.7: a server waits at least 5 minutes for a command
PRUNE_EVERY = 3600.0  # seconds between deletions of raw bounces past their retention
# Commands that carry no mail; a client that only sends these is holding a slot.
IDLE_COMMANDS = ("NOOP", "RSET", "HELO", "EHLO", "HELP", "VRFY", "EXPN")
TEMPFAIL = "451 4.3.0 Temporary failure; try again later"


class BounceIntake:
    """Owns the listening socket and the processing tasks; `start()` then `stop()`.

    Settings are read when each connection or command arrives, so a change applies at once.
    """

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.port = 0
        self.active = 0
        self.per_peer: Counter[str] = Counter()  # open sessions per client (peer_key)
        self._secret = settings.resolved_secret_key()
        self._feedback = settings.feedback_address.strip().lower()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pruner: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port) and return the port bound."""
        # aiosmtpd logs every command and address at INFO ("mail.log"): noise, and VERP tokens.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, host, port)
        except OSError as exc:
            raise PostwayError(
                f"the bounce intake cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(port 25 needs privileges; choose another with --port or --bounce-port)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(process_pending(self.db, self.settings))
        self._pruner = loop.create_task(self._prune_forever())
        log.info("bounce intake for %s listening on %s:%s", self.domain, host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        await self.drain()

    async def drain(self) -> None:
        """Wait until every stored message has been processed."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> BounceIntake:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def domain(self) -> str:
        return self.settings.bounce_domain.lower().rstrip(".")

    def check_recipient(self, address: str) -> str | None:
        """None when the intake accepts mail for `address`, else the SMTP refusal."""
        clean = address.strip().strip("<>").lower()
        if self._feedback and clean == self._feedback:
            return None
        if clean.rpartition("@")[2].rstrip(".") != self.domain:
            return f"550 5.7.1 Relaying denied: this server only takes bounces for {self.domain}"
        if parse_return_path(clean, self._secret, self.domain) is None:
            return "550 5.1.1 No such bounce address here"
        return None

    async def check_quota(self, host: str, *, reports: int, size: int) -> str | None:
        """None when `host` may store this much more today, else the SMTP refusal."""
        try:
            return await quota_refusal(self.db, self.settings, host, reports=reports, size=size)
        except Exception:  # the sender retries; a database hiccup must not read as a verdict
            log.exception("checking the bounce quota of %s failed", host)
            return TEMPFAIL

    async def accept(self, mail_from: str, rcpt_tos: list[str], peer: str, raw: bytes) -> str:
        """Check the client's quota, store, then schedule processing; the reply to the dot."""
        refusal = await self.check_quota(peer, reports=len(rcpt_tos), size=len(raw))
        if refusal is not None:
            return refusal
        try:
            ids = await store_bounce(
                self.db, mail_from=mail_from, rcpt_tos=rcpt_tos, peer=peer, raw=raw
            )
        except Exception:  # the sender keeps it and retries: nothing is lost
            log.exception("storing a bounce failed")
            return "451 4.3.0 Temporary failure storing the message; try again later"
        for bounce_id in ids:
            self._spawn(process_bounce(self.db, self.settings, bounce_id))
        return f"250 2.0.0 OK: stored as {ids[0]}"

    def admit(self, key: str) -> bool:
        """Count a new session from client `key`, unless it already holds its share."""
        if self.per_peer[key] >= self.settings.bounce_max_connections_per_peer:
            return False
        self.per_peer[key] += 1
        return True

    def release(self, key: str) -> None:
        self.per_peer[key] -= 1
        if self.per_peer[key] <= 0:
            del self.per_peer[key]

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await prune_bounce_bodies(
                    self.db, retention_days=self.settings.bounce_retention_days
                )
                if pruned.bodies:
                    log.info(
                        "deleted %d raw bounces (%d bytes) past their retention",
                        pruned.bodies, pruned.bytes,
                    )  # fmt: skip
            except Exception:  # noqa: BLE001 - try again next round; the intake keeps serving
                log.exception("deleting raw bounces past their retention failed")
            await asyncio.sleep(PRUNE_EVERY)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _protocol(self) -> asyncio.Protocol:
        # Counted here, not in connection_made: several accepts may run before either is called.
        # The per-client limit needs the peer's address, so _IntakeSMTP checks it on connect.
        if self.active >= self.settings.bounce_max_connections:
            return _Busy()
        self.active += 1
        return _IntakeSMTP(self)


def _host(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


def _declared_size(options: list[str]) -> int:
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


class _Handler:
    def __init__(self, intake: BounceIntake) -> None:
        self.intake = intake

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # Before any content: a client over its daily quota is told now, not after 10 MB.
        refusal = await self.intake.check_quota(
            _host(session.peer), reports=1, size=_declared_size(options)
        )
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.intake.check_recipient(address)
        if refusal is not None:
            return refusal
        if address.lower() in (a.lower() for a in envelope.rcpt_tos):
            return "250 2.1.5 OK"  # named twice: stored once
        if len(envelope.rcpt_tos) >= self.intake.settings.bounce_max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        sender = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)  # <> is null
        reply = await self.intake.accept(sender, envelope.rcpt_tos, _host(session.peer), raw)
        if reply.startswith("250") and isinstance(server, _IntakeSMTP):
            server.refill_idle_budget()  # mail came: the client is not just holding a slot
        return reply


class _IntakeSMTP(SMTP):
    """aiosmtpd's server plus the per-client, deadline and idle-command limits."""

    def __init__(self, intake: BounceIntake) -> None:
        super().__init__(
            _Handler(intake),
            hostname=intake.settings.hostname,
            data_size_limit=intake.settings.bounce_max_bytes,
            enable_SMTPUTF8=True,  # bounces for internationalised addresses come this way
            timeout=IDLE_TIMEOUT,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],  # nobody logs in to a bounce MX
            loop=asyncio.get_running_loop(),
        )
        self.intake = intake
        self._peer_key: str | None = None  # set once admitted; None: refused or not yet
        self._deadline: asyncio.TimerHandle | None = None
        self._idle_left = intake.settings.bounce_max_idle_commands
        for name in IDLE_COMMANDS:
            if name in self._smtp_methods:
                self._smtp_methods[name] = self._budgeted(self._smtp_methods[name])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._peer_key is not None:  # called again after STARTTLS: the same session
            super().connection_made(transport)
            return
        key = peer_key(_host(transport.get_extra_info("peername")))
        if not self.intake.admit(key):
            _refuse(transport, b"421 4.7.0 Too many connections from your address; try later")
            return
        self._peer_key = key
        super().connection_made(transport)
        self._deadline = self.loop.call_later(
            self.intake.settings.bounce_session_seconds, self._session_too_long
        )

    def connection_lost(self, error: Exception | None) -> None:
        self.intake.active -= 1
        if self._peer_key is None:
            return  # refused before a session began: nothing of aiosmtpd's to tear down
        self.intake.release(self._peer_key)
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._peer_key is None else super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._peer_key is not None:  # a refused client's bytes are dropped unread
            super().data_received(data)

    def refill_idle_budget(self) -> None:
        self._idle_left = self.intake.settings.bounce_max_idle_commands

    def _session_too_long(self) -> None:
        if self.transport is not None:
            _refuse(self.transport, b"421 4.4.2 Session time limit reached; closing")

    def _budgeted(self, method: Callable[[str], Awaitable[None]]) -> Callable[[str], Any]:
        @functools.wraps(method)  # keeps aiosmtpd's HELP text, kept on the method
        async def counted(arg: str) -> None:
            if self._idle_left <= 0:
                await self.push("421 4.7.0 Too many commands without mail; closing")
                if self.transport is not None:
                    self.transport.close()
                return
            self._idle_left -= 1
            await method(arg)

        return counted


def _refuse(transport: asyncio.BaseTransport, reply: bytes) -> None:
    """Say why (421: the sender retries later) and hang up."""
    wt = cast(asyncio.WriteTransport, transport)
    with contextlib.suppress(Exception):
        wt.write(reply + b"\r\n")
    wt.close()


class _Busy(asyncio.Protocol):
    """Answers a connection over the overall limit with 421 (the sender retries) and hangs up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _refuse(transport, b"421 4.7.0 Too many connections; try again later")
