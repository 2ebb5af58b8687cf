"""The bounce intake: an SMTP server (aiosmtpd) for the bounce domain, the MX of VERP addresses.

Never an open relay: RCPT is accepted only for a signed VERP address of the bounce domain
(its MAC verifies) or the configured feedback-loop address; everything else gets 550 at RCPT,
before any content is read. Limits: SIZE (advertised and enforced), concurrent connections
(421 beyond), recipients per transaction, and RFC 5321 line and command lengths (aiosmtpd's).

Durability: each accepted message is stored raw and committed before DATA is answered 250;
processing runs afterwards, off the SMTP session, and rows a crash left unprocessed are picked
up when the intake starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from postway.bounces.apply import process_bounce, process_pending, store_bounce
from postway.config import Settings
from postway.errors import PostwayError
from postway.mta.verp import parse_return_path
from postway.store.db import Database

log = logging.getLogger("postway.bounces")

MAX_RECIPIENTS = 20  # a bounce goes to one return path; a few allow for batching relays
IDLE_TIMEOUT = 300.0  # RFC 5321 4.5.3.2.7: a server waits at least 5 minutes for a command


class BounceIntake:
    """Owns the listening socket and the processing tasks; `start()` then `stop()`."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.port = 0
        self.active = 0
        self._secret = settings.resolved_secret_key()
        self._feedback = settings.feedback_address.strip().lower()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
        log.info("bounce intake for %s listening on %s:%s", self.domain, host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
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

    async def accept(self, mail_from: str, rcpt_tos: list[str], peer: str, raw: bytes) -> str:
        """Store, then schedule processing; the reply to the final dot."""
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _protocol(self) -> asyncio.Protocol:
        # Counted here, not in connection_made: several accepts may run before either is called.
        if self.active >= self.settings.bounce_max_connections:
            return _Busy()
        self.active += 1
        return _IntakeSMTP(self)


class _Handler:
    def __init__(self, intake: BounceIntake) -> None:
        self.intake = intake

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.intake.check_recipient(address)
        if refusal is not None:
            return refusal
        if address.lower() in (a.lower() for a in envelope.rcpt_tos):
            return "250 2.1.5 OK"  # named twice: stored once
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = session.peer
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        raw = bytes(envelope.original_content or b"")
        sender = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)  # <> is null
        return await self.intake.accept(sender, envelope.rcpt_tos, host, raw)


class _IntakeSMTP(SMTP):
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

    def connection_lost(self, error: Exception | None) -> None:
        self.intake.active -= 1
        super().connection_lost(error)


class _Busy(asyncio.Protocol):
    """Answers a connection over the limit with 421 (the sender retries later) and hangs up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wt = cast(asyncio.WriteTransport, transport)
        with contextlib.suppress(Exception):
            wt.write(b"421 4.7.0 Too many connections; try again later\r\n")
        wt.close()
