"""ScriptedSMTPServer: a real SMTP server on loopback that answers as a test scripts it.

Built on aiosmtpd, run on its own thread and event loop so it serves tests that block their own
loop (or have none). Everything it records is guarded by one lock; the script (replies, stalls,
drops) may be changed by the test while the server runs.

Phases named in `stall` and `disconnect_at`:
    "connect"  before the greeting
    "ehlo"     before the EHLO reply
    "mail"     before the MAIL reply
    "rcpt"     before each RCPT reply
    "data"     stall: before the 354 reply; disconnect: after 354 and the first line of content
    "dot"      after the final dot, before the reply (the "outcome unknown" window)
    "rset"     before the RSET reply (a reused session the server dropped meanwhile)

`command_replies` answers a command with a scripted reply instead of running it (e.g.
{"EHLO": "421 4.3.2 busy"}, {"STARTTLS": "454 4.7.0 TLS not available"}, {"DATA": "554 no"});
`split_replies` writes every reply a few bytes at a time, each piece in its own packet.

    async with ScriptedSMTPServer(rcpt_replies={"x@example.org": "550 5.1.1 No such user"}) as srv:
        ...  # connect to srv.host, srv.port
        assert srv.received[0].rcpt_tos == ["y@example.org"]
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DISCONNECT = "disconnect"
"""Use as a reply (e.g. in `rcpt_replies`, `data_reply`) to drop the connection instead."""

PHASES = ("connect", "ehlo", "mail", "rcpt", "data", "dot", "rset")
KNOWN_EXTENSIONS = ("SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "STARTTLS", "AUTH")


@dataclass
class Received:
    """One transaction whose content arrived (the final dot was seen)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    auth_user: str | None
    session_id: int
    mail_options: list[str] = field(default_factory=list)
    reply: str | None = None  # what the server answered after the dot; None if it never did


@dataclass(frozen=True)
class Command:
    """One command line as the server read it."""

    session_id: int
    verb: str
    arg: str | None
    # The client sent this line before the server had answered the previous one.
    pipelined: bool


DataReply = str | Callable[[Received], str]


class ScriptedSMTPServer:
    """An aiosmtpd server on 127.0.0.1 (free port) whose replies a test chooses.

    Invariants: `received` holds only transactions answered 2xx after the dot; every
    transaction whose content arrived is in `transactions`, whatever the reply.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,  # 0: a free one (several servers may share a port on 127.0.0.x)
        hostname: str = "mx.test",
        tls_context: ssl.SSLContext | None = None,
        starttls: bool | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        users: Mapping[str, str] | None = None,
        require_auth: bool = False,
        greeting: str | None = None,  # a refusal sent instead of the 220 greeting
        mail_reply: str | Callable[[int], str] | None = None,  # callable: by session id
        rcpt_replies: Mapping[str, str] | None = None,
        rcpt_default: str = "250 2.1.5 OK",
        data_reply: DataReply = "250 2.0.0 OK: queued as TESTQ1",
        disconnect_at: str | None = None,
        stall: Mapping[str, float] | None = None,
        omit_extensions: Iterable[str] = (),
        size_limit: int = 32 * 1024 * 1024,
        command_replies: Mapping[str, str] | None = None,  # verb -> reply instead of running it
        split_replies: bool = False,  # every reply written in 3-byte pieces, one packet each
    ) -> None:
        if (starttls or require_starttls or implicit_tls) and tls_context is None:
            raise ValueError("TLS options need tls_context (see tests.peers.tls)")
        if disconnect_at is not None and disconnect_at not in PHASES:
            raise ValueError(f"disconnect_at must be one of {PHASES}")
        for phase in stall or {}:
            if phase not in PHASES:
                raise ValueError(f"stall phase must be one of {PHASES}")
        self.host = host
        self.port = port
        self.hostname = hostname
        self.tls_context = tls_context
        if starttls is None:  # offer STARTTLS whenever a certificate is at hand
            starttls = tls_context is not None and not implicit_tls
        self.starttls = starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.users = dict(users or {})
        self.require_auth = require_auth
        # The script: plain attributes, re-read on every use, so a test may change them live.
        self.greeting = greeting
        self.mail_reply = mail_reply
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
        self.rcpt_default = rcpt_default
        self.data_reply: DataReply = data_reply
        self.disconnect_at = disconnect_at
        self.stall = dict(stall or {})
        self.omit_extensions = {e.upper() for e in omit_extensions}
        self.size_limit = size_limit
        self.command_replies = {k.upper(): v for k, v in (command_replies or {}).items()}
        self.split_replies = split_replies
        # Records, guarded by _lock.
        self._lock = threading.Lock()
        self.transactions: list[Received] = []
        self.commands: list[Command] = []
        self.sessions_opened = 0
        self.active_sessions = 0
        self.peak_sessions = 0
        self.transactions_per_session: dict[int, int] = {}
        # Runtime.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._release: asyncio.Event | None = None

    # -- what the test reads ----------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return [t for t in self.transactions if t.reply and t.reply.startswith("2")]

    def commands_of(self, session_id: int) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if c.session_id == session_id]

    def verbs(self) -> list[str]:
        with self._lock:
            return [c.verb for c in self.commands]

    def set_rcpt_reply(self, address: str, reply: str) -> None:
        with self._lock:
            self.rcpt_replies = {**self.rcpt_replies, address.lower(): reply}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ScriptedSMTPServer:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="scripted-smtp", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted SMTP server did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> ScriptedSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedSMTPServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._release = asyncio.Event()
            self._server = loop.run_until_complete(
                loop.create_server(
                    self._make_protocol,
                    self.host,
                    self.port,
                    ssl=self.tls_context if self.implicit_tls else None,
                )
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported to the starting thread
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None and self._release is not None
        self._release.set()
        self._server.close()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _make_protocol(self) -> _ScriptedSMTP:
        return _ScriptedSMTP(self)

    # -- script helpers, called on the server's loop ------------------------------------------

    def _open_session(self) -> int:
        with self._lock:
            self.sessions_opened += 1
            self.active_sessions += 1
            self.peak_sessions = max(self.peak_sessions, self.active_sessions)
            self.transactions_per_session[self.sessions_opened] = 0
            return self.sessions_opened

    def _close_session(self) -> None:
        with self._lock:
            self.active_sessions -= 1

    def _record_command(self, cmd: Command) -> None:
        with self._lock:
            self.commands.append(cmd)

    def _record_transaction(self, rec: Received) -> None:
        with self._lock:
            self.transactions.append(rec)
            self.transactions_per_session[rec.session_id] += 1

    def _rcpt_reply_for(self, address: str) -> str:
        with self._lock:
            return self.rcpt_replies.get(address.lower(), self.rcpt_default)

    async def _pause(self, phase: str) -> None:
        seconds = self.stall.get(phase)
        if seconds:
            assert self._release is not None
            # Waiting on the release event lets stop() end a long stall at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), seconds)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            if self.users.get(user) == auth_data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _Handler:
    """aiosmtpd hooks; all script decisions are read from the owning ScriptedSMTPServer."""

    def __init__(self, owner: ScriptedSMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await server.act("ehlo")
        session.host_name = hostname
        lines = [r[4:] for r in responses[:-1]]  # drop "250-" and the closing "250 HELP"
        if "PIPELINING" not in self.owner.omit_extensions:
            lines.append("PIPELINING")
        lines.append("ENHANCEDSTATUSCODES")
        kept = [ln for ln in lines if ln.split()[0].upper() not in self.owner.omit_extensions]
        kept.append("HELP")
        return [f"250-{ln}" for ln in kept[:-1]] + [f"250 {kept[-1]}"]

    async def handle_MAIL(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        await server.act("mail")
        scripted = self.owner.mail_reply
        reply = (scripted(server.session_id) if callable(scripted) else scripted) or "250 2.1.0 OK"
        if reply == DISCONNECT:
            await server.drop()
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        await server.act("rcpt")
        reply = self.owner._rcpt_reply_for(address)
        if reply == DISCONNECT:
            await server.drop()
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_DATA(self, server: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        rec = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            tls=owner.implicit_tls or session.ssl is not None,
            auth_user=session.auth_data if isinstance(session.auth_data, str) else None,
            session_id=server.session_id,
            mail_options=list(envelope.mail_options),
        )
        # Recorded before any scripted drop, so the test sees it as soon as the client does.
        owner._record_transaction(rec)
        await server.act("dot")
        reply = owner.data_reply(rec) if callable(owner.data_reply) else owner.data_reply
        if reply == DISCONNECT:
            await server.drop()
        with owner._lock:
            rec.reply = reply
        return reply


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with session accounting, command logging, stalls and drops."""

    def __init__(self, owner: ScriptedSMTPServer) -> None:
        use_starttls = owner.starttls or owner.require_starttls
        super().__init__(
            _Handler(owner),
            hostname=owner.hostname,
            enable_SMTPUTF8="SMTPUTF8" not in owner.omit_extensions,
            tls_context=owner.tls_context if use_starttls else None,
            require_starttls=owner.require_starttls,
            auth_required=owner.require_auth,
            # An implicit-TLS connection is already encrypted; aiosmtpd only knows STARTTLS.
            auth_require_tls=not owner.implicit_tls,
            authenticator=owner._authenticate,
            data_size_limit=owner.size_limit,
            loop=owner._loop,
        )
        self.owner = owner
        self.session_id = 0
        self._next_pipelined = False
        self._counted = False
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._logged(verb, method)

    def _logged(self, verb: str, method: Callable[[str | None], Any]) -> Callable[..., Any]:
        async def run(arg: str | None) -> None:
            # Bytes already waiting after this line were sent before we answered it.
            waiting = bool(self._reader._buffer)  # type: ignore[attr-defined]
            self.owner._record_command(Command(self.session_id, verb, arg, self._next_pipelined))
            self._next_pipelined = waiting
            scripted = self.owner.command_replies.get(verb.upper())
            if scripted is not None:
                await self.push(scripted)
                return
            await method(arg)

        return run

    async def _handle_client(self) -> None:
        self.session_id = self.owner._open_session()
        self._counted = True
        await self.act("connect")
        if self.owner.greeting is not None:
            # A scripted refusal instead of the greeting (e.g. "421 4.3.2 busy"), then goodbye.
            await self.push(self.owner.greeting)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.owner._close_session()
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:  # type: ignore[override]
        if not self.owner.split_replies:
            await super().push(status)  # type: ignore[arg-type]
            return
        data = (status.encode() if isinstance(status, str) else status) + b"\r\n"
        for i in range(0, len(data), 3):
            self._writer.write(data[i : i + 3])  # type: ignore[attr-defined]
            await self._writer.drain()  # type: ignore[attr-defined]
            await asyncio.sleep(0.002)  # the next piece goes in a packet of its own

    async def act(self, phase: str) -> None:
        """Apply the script for a phase: stall first, then maybe drop."""
        await self.owner._pause(phase)
        if self.owner.disconnect_at == phase and phase != "data":
            await self.drop()

    async def drop(self) -> None:
        """Close the connection without a reply; never returns (the session task is cancelled)."""
        if self.transport is not None:
            self.transport.abort()
        await asyncio.Event().wait()

    async def smtp_RSET(self, arg: str | None) -> None:
        await self.act("rset")
        await super().smtp_RSET(arg)  # type: ignore[arg-type]

    async def smtp_DATA(self, arg: str | None) -> None:
        if self.owner.disconnect_at != "data" and not self.owner.stall.get("data"):
            await super().smtp_DATA(arg)  # type: ignore[arg-type]
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await super().smtp_DATA(arg)  # type: ignore[arg-type]
            return
        await self.owner._pause("data")
        if self.owner.disconnect_at != "data":
            await super().smtp_DATA(arg)  # type: ignore[arg-type]
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # Take some of the content, then vanish mid-transfer.
        await self._reader.readuntil(b"\r\n")
        await self.drop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for "connection refused" tests)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
