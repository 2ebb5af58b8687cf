"""One SMTP client session to a recipient's server: greeting, EHLO, STARTTLS, transactions.

Why not aiosmtplib here: its protocol parses one reply per read and discards replies that
arrive while no command is waiting, so pipelined replies (RFC 2920) are lost or hang. The MTA
needs pipelining and per-phase timeouts, so this session speaks SMTP over asyncio streams.
(The custom-relay channel keeps aiosmtplib, which suits AUTH-heavy relay sessions.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Literal

from postway.errors import PostwayError

TlsMode = Literal["opportunistic", "require", "off"]
_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_MAX_REPLY_LINES = 100


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # all lines joined by "\n", without the codes

    @property
    def status(self) -> str | None:
        """The enhanced status code (RFC 3463) the reply starts with, if any."""
        m = _STATUS_RE.match(self.text)
        return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else None

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.split())}"


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait in each phase. Defaults are RFC 5321 4.5.3.2's minimums (connect has
    no RFC figure; 30 s is common practice)."""

    connect: float = 30.0
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 120.0
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    final_dot: float = 600.0
    rset: float = 120.0
    quit: float = 10.0

    @classmethod
    def scaled(cls, seconds: float) -> Timeouts:
        """Every phase the same (tests use a short one)."""
        return cls(*([seconds] * 11))


class SmtpError(PostwayError):
    def __init__(self, message: str, host: str, phase: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.phase = phase
        self.reply = reply


class ConnectFailed(SmtpError):
    """No session: refused, unreachable, timed out, or the server would not talk (its reply,
    if any, is in `reply`). The next server may be tried. `tls_failed` marks a broken TLS
    handshake, after which a plaintext retry is allowed in opportunistic mode."""

    def __init__(self, *args: object, tls_failed: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tls_failed = tls_failed


class ConnectionLost(SmtpError):
    """The connection dropped or a reply timed out during a transaction: not delivered."""

    def __init__(self, *args: object, timed_out: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.timed_out = timed_out


class OutcomeUnknown(ConnectionLost):
    """The whole message was sent but no reply to the final dot came: the server may have
    taken it (RFC 1047). A retry risks a duplicate; callers must say so."""


class ResetFailed(ConnectionLost):
    """A reused session failed the RSET sent in front of a transaction (dropped meanwhile, or
    refused it). The session is closed before any content was sent, so the server keeps
    nothing of this transaction: it may be run again on another session."""


class NotSupported(SmtpError):
    """The message needs an extension (SMTPUTF8, 8BITMIME) the server does not offer."""


@dataclass
class TransactionResult:
    mail: Reply
    rcpts: dict[str, Reply]
    data: Reply | None  # reply to the final dot (or to DATA when it was refused); None if
    # no recipient was accepted
    pipelined: bool = False


def tls_context(mode: TlsMode, ca_file: str = "", verify: bool = True) -> ssl.SSLContext:
    """Opportunistic TLS encrypts without authenticating (RFC 7435: an MX's certificate
    rarely names it); required TLS verifies the certificate unless told not to."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if mode == "opportunistic" or not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def data_block(message: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled, ended by `.` (RFC 5321
    4.5.2). Invariant: the server's un-stuffed content equals `message` with CRLF endings.

    Plain `bytes.replace` passes (linear, several times faster than the regex forms): bare CR
    and CRLF become LF, every LF becomes CRLF, then a dot after each line start is doubled."""
    body = message
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    body = body.replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A message made ready for the wire once (normalised, dot-stuffed, its 8-bit content
    noted) and then sent unchanged in every transaction and retry that carries it."""

    payload: bytes  # the DATA block, ended by `.` CRLF
    eightbit: bool

    @classmethod
    def of(cls, message: bytes | WireMessage) -> WireMessage:
        if isinstance(message, WireMessage):
            return message
        return cls(data_block(message), not message.isascii())


@dataclass
class SmtpSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str  # the server's name (for TLS, logs, remote_mta)
    address: str
    port: int
    timeouts: Timeouts
    extensions: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    transactions: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    greeting: Reply | None = None
    # A reused session owes an RSET; with PIPELINING it goes in one write with the next MAIL.
    reset_pending: bool = False

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        address: str,
        port: int,
        *,
        helo_name: str,
        timeouts: Timeouts,
        tls_mode: TlsMode = "opportunistic",
        tls_ctx: ssl.SSLContext | None = None,
    ) -> SmtpSession:
        """Connect, read the greeting, EHLO, and STARTTLS when offered (or required).

        Raises ConnectFailed for anything that leaves no usable session.
        """
        try:
            async with asyncio.timeout(timeouts.connect):
                reader, writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                what = "timed out"
            elif isinstance(exc, ConnectionRefusedError):
                what = "connection refused"
            else:
                what = exc.strerror or str(exc)
            raise ConnectFailed(
                f"could not connect to {host} [{address}]:{port}: {what}", host, "connect"
            ) from exc
        session = cls(reader, writer, host, address, port, timeouts)
        try:
            await session._handshake(helo_name, tls_mode, tls_ctx)
        except BaseException:
            session.close()
            raise
        return session

    async def _handshake(
        self, helo_name: str, tls_mode: TlsMode, tls_ctx: ssl.SSLContext | None
    ) -> None:
        t = self.timeouts
        self.greeting = await self._setup_reply("greeting", t.greeting)
        if self.greeting.code != 220:
            raise ConnectFailed(
                f"{self.host} refused the session: {self.greeting}", self.host, "greeting",
                self.greeting,
            )  # fmt: skip
        await self._ehlo(helo_name)
        if tls_mode == "off":
            return
        if "STARTTLS" not in self.extensions:
            if tls_mode == "require":
                raise ConnectFailed(
                    f"{self.host} does not offer STARTTLS, which is required", self.host, "tls"
                )
            return
        await self._send(b"STARTTLS\r\n", "starttls")
        reply = await self._setup_reply("starttls", t.starttls)
        if reply.code != 220:
            if tls_mode == "require":
                raise ConnectFailed(f"{self.host} refused STARTTLS: {reply}", self.host, "tls")
            return  # opportunistic: carry on in plaintext, as the server asked
        ctx = tls_ctx or tls_context(tls_mode)
        server_name = None if _is_ip(self.host) else self.host
        try:
            async with asyncio.timeout(t.starttls):
                await self.writer.start_tls(ctx, server_hostname=server_name)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise ConnectFailed(
                f"TLS with {self.host} failed: {exc}", self.host, "tls", tls_failed=True
            ) from exc
        self.tls = True
        # RFC 3207 4.2: forget what was learnt before TLS and ask again.
        await self._ehlo(helo_name)

    async def _ehlo(self, helo_name: str) -> None:
        await self._send(f"EHLO {helo_name}\r\n".encode(), "ehlo")
        reply = await self._setup_reply("ehlo", self.timeouts.ehlo)
        if reply.ok:
            self.extensions = _parse_extensions(reply.text)
            return
        if reply.code >= 500:  # a pre-ESMTP server: HELO, and no extensions
            await self._send(f"HELO {helo_name}\r\n".encode(), "helo")
            reply = await self._setup_reply("helo", self.timeouts.ehlo)
            if reply.ok:
                self.extensions = {}
                return
        raise ConnectFailed(f"{self.host} refused EHLO: {reply}", self.host, "ehlo", reply)

    async def _setup_reply(self, phase: str, timeout: float) -> Reply:
        try:
            return await self._read_reply(phase, timeout)
        except ConnectionLost as exc:
            raise ConnectFailed(str(exc), self.host, phase) from exc

    # -- transactions -------------------------------------------------------------------------

    def supports(self, extension: str) -> bool:
        return extension.upper() in self.extensions

    @property
    def pipelining(self) -> bool:
        return self.supports("PIPELINING")

    async def transaction(
        self,
        mail_from: str,
        recipients: list[str],
        message: bytes | WireMessage,
        *,
        smtputf8: bool = False,
    ) -> TransactionResult:
        """One MAIL/RCPT.../DATA transaction; every recipient gets a reply in the result.

        Pipelined (one write for MAIL, all RCPTs and DATA) when the server offers PIPELINING.
        Raises NotSupported before sending anything if the message needs an extension the
        server lacks; ConnectionLost if the connection fails before the final dot; and
        OutcomeUnknown if it fails after it.
        """
        wire = WireMessage.of(message)
        eightbit = wire.eightbit
        if smtputf8 and not self.supports("SMTPUTF8"):
            raise NotSupported(
                f"{self.host} does not support SMTPUTF8, which this message needs "
                "(an internationalised address)",
                self.host, "mail",
            )  # fmt: skip
        if eightbit and not smtputf8 and not self.supports("8BITMIME"):
            raise NotSupported(
                f"{self.host} does not support 8BITMIME, which this message's 8-bit "
                "content needs",
                self.host, "mail",
            )  # fmt: skip
        self.last_used = time.monotonic()
        self.transactions += 1
        payload = wire.payload
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(payload)}")
        if eightbit and self.supports("8BITMIME"):
            params.append("BODY=8BITMIME")
        if smtputf8:
            params.append("SMTPUTF8")
        mail_cmd = f"MAIL FROM:<{mail_from}>{''.join(' ' + p for p in params)}\r\n"
        rcpt_cmds = [f"RCPT TO:<{r}>\r\n" for r in recipients]
        enc = "utf-8" if smtputf8 else "ascii"
        t = self.timeouts
        if self.reset_pending and not self.pipelining:
            self.reset_pending = False
            if not await self.reset():
                raise ResetFailed(f"{self.host} did not accept RSET", self.host, "rset")
        if self.pipelining:
            commands = (mail_cmd + "".join(rcpt_cmds) + "DATA\r\n").encode(enc)
            if self.reset_pending:
                self.reset_pending = False
                await self._pipelined_reset(commands)
            else:
                await self._send(commands, "mail")
            mail = await self._read_reply("mail", t.mail)
            rcpts = {r: await self._read_reply("rcpt", t.rcpt) for r in recipients}
            data_reply = await self._read_reply("data", t.data_init)
        else:
            await self._send(mail_cmd.encode(enc), "mail")
            mail = await self._read_reply("mail", t.mail)
            if not mail.ok:
                return TransactionResult(mail, {r: mail for r in recipients}, None)
            rcpts = {}
            for r, cmd in zip(recipients, rcpt_cmds, strict=True):
                await self._send(cmd.encode(enc), "rcpt")
                rcpts[r] = await self._read_reply("rcpt", t.rcpt)
            if not any(rep.ok for rep in rcpts.values()):
                return TransactionResult(mail, rcpts, None)
            await self._send(b"DATA\r\n", "data")
            data_reply = await self._read_reply("data", t.data_init)
        pipelined = self.pipelining
        if not mail.ok:
            rcpts = {r: mail for r in recipients}
        accepted = mail.ok and any(rep.ok for rep in rcpts.values())
        if data_reply.code != 354:
            return TransactionResult(mail, rcpts, data_reply if accepted else None, pipelined)
        if not accepted:
            # RFC 2920 3.1: DATA was accepted though no recipient was; end it empty.
            await self._send(b".\r\n", "data")
            await self._read_reply("data", t.final_dot)
            return TransactionResult(mail, rcpts, None, pipelined)
        self.writer.write(payload)
        try:
            async with asyncio.timeout(t.data_block):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise self._lost("data", exc) from exc
        final = await self._read_reply("dot", t.final_dot)
        return TransactionResult(mail, rcpts, final, pipelined)

    async def _pipelined_reset(self, commands: bytes) -> None:
        """RSET written with the transaction's commands, its reply read first. On failure the
        session is closed before any content is sent: the server drops the transaction."""
        try:
            await self._send(b"RSET\r\n" + commands, "rset")
            reply = await self._read_reply("rset", self.timeouts.rset)
        except ConnectionLost as exc:
            raise ResetFailed(str(exc), self.host, "rset") from exc
        if not reply.ok:
            self.close()
            raise ResetFailed(f"{self.host} refused RSET: {reply}", self.host, "rset", reply)

    async def prepare_reuse(self) -> bool:
        """Make an idle session ready for its next transaction; False when it is unusable.
        With PIPELINING the RSET is only noted (sent with the next MAIL, no round trip)."""
        if not self.alive:
            self.close()
            return False
        if self.pipelining:
            self.reset_pending = True
            return True
        return await self.reset()

    async def reset(self) -> bool:
        """RSET between transactions; False when the session is no longer usable."""
        if not self.alive:
            return False
        try:
            await self._send(b"RSET\r\n", "rset")
            return (await self._read_reply("rset", self.timeouts.rset)).ok
        except ConnectionLost:
            self.close()
            return False

    async def quit(self) -> None:
        try:
            if self.alive:
                await self._send(b"QUIT\r\n", "quit")
                await self._read_reply("quit", self.timeouts.quit)
        except ConnectionLost:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    # -- wire ---------------------------------------------------------------------------------

    async def _send(self, data: bytes, phase: str) -> None:
        if self.writer.is_closing():
            raise ConnectionLost(f"connection to {self.host} is closed", self.host, phase)
        self.writer.write(data)
        try:
            await self.writer.drain()
        except OSError as exc:
            raise self._lost(phase, exc) from exc

    async def _read_reply(self, phase: str, timeout: float) -> Reply:
        """One (possibly multi-line) reply. Replies to pipelined commands queue up in the
        stream's buffer and are read here one after another, in order."""
        lines: list[str] = []
        code = 0
        try:
            async with asyncio.timeout(timeout):
                while len(lines) < _MAX_REPLY_LINES:
                    raw = await self.reader.readline()
                    if not raw.endswith(b"\n"):
                        raise ConnectionResetError("connection closed by the server")
                    line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                    if len(line) < 3 or not line[:3].isdigit():
                        raise ConnectionResetError(f"malformed reply line {line[:80]!r}")
                    code = int(line[:3])
                    lines.append(line[4:])
                    if line[3:4] != "-":
                        return Reply(code, "\n".join(lines))
                raise ConnectionResetError("reply too long")
        except (OSError, TimeoutError, ValueError) as exc:
            raise self._lost(phase, exc) from exc

    def _lost(self, phase: str, exc: BaseException) -> ConnectionLost:
        self.close()
        timed_out = isinstance(exc, TimeoutError)
        what = "timed out" if timed_out else str(exc) or type(exc).__name__
        kind = OutcomeUnknown if phase == "dot" else ConnectionLost
        after = {
            "dot": "after the end of data (the message may have been delivered)",
            "data": "while sending data",
        }.get(phase, f"after {phase.upper()}")
        return kind(
            f"connection to {self.host} lost {after}: {what}", self.host, phase,
            timed_out=timed_out,
        )  # fmt: skip


def _parse_extensions(text: str) -> dict[str, str]:
    ext = {}
    for line in text.split("\n")[1:]:  # the first line is the server's name
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            ext[keyword.upper()] = params
    return ext


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
