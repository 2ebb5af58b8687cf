"""The Custom SMTP channel: the user's own relay (Exchange, Microsoft 365, Postfix, an ESP).

A session is connect, TLS as configured (certificates verified by default) and AUTH; each
message is MAIL, RCPT per recipient and DATA once. Per-recipient outcome from the RCPT and DATA
replies: 2xx sent, 4xx or a dropped connection deferred, 5xx failed with the reply kept.

Sessions are kept across messages (`RelaySessions`): one relay and one set of credentials
share them, at most `max_connections` at once, each retired after `max_messages` messages or
`idle_seconds` unused. A reused session found broken when MAIL is sent (the relay dropped it
while idle) is replaced and the message sent on the new one, once: nothing of it was
accepted. A break later in the transaction is never retried here (after DATA the relay may
have taken the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Literal, Required, TypedDict

import aiosmtplib

from postway.channels.base import ChannelModule, OutboundMessage, Outcome, outcomes_for_all
from postway.config import Settings
from postway.domain.bounce_reasons import classify_reply, find_status
from postway.domain.network import non_global_kind
from postway.domain.states import REASON_AUTH_FAILURE, ChannelName, DeliveryState
from postway.domain.throttle import Limits
from postway.errors import ChannelError
from postway.mta.smtp_client import tls_context
from postway.store.channel_settings import SmtpRelay


@dataclass(frozen=True, slots=True)
class RelayCheck:
    """Result of a connection test: `step` names the first step that failed."""

    ok: bool
    step: str  # resolve, connect, tls, auth, or done
    message: str


async def resolve_relay(host: str, port: int, allow_private: bool) -> list[str]:
    """The relay's addresses. Refuses every non-global target (loopback, private, link-local,
    multicast, NAT64, IPv4-mapped, ...: see `postway.domain.network`) unless allowed, so the
    relay setting cannot be used to probe the network Postway runs in (SSRF)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ChannelError(f"the name {host} was not found in DNS", step="resolve") from exc
    ips = sorted({str(info[4][0]) for info in infos})
    refused = [(ip, kind) for ip in ips if (kind := non_global_kind(ip)) is not None]
    if not allow_private and refused:
        ip, kind = refused[0]
        raise ChannelError(
            f"{host} resolves to {ip}, which is not a public internet address ({kind}); "
            "relays must be reachable on the public internet "
            "(set POSTWAY_ALLOW_PRIVATE_RELAYS=1 to allow private or loopback relays)",
            step="resolve",
        )
    return ips


class SmtpChannel:
    name = ChannelName.SMTP.value

    def __init__(
        self, relay: SmtpRelay, settings: Settings, sessions: RelaySessions | None = None
    ) -> None:
        self.relay = relay
        self.settings = settings
        self.sessions = sessions  # None: a session of its own per message
        self.step = "resolve"  # the step `open` is at, for a test that runs out of time

    @property
    def key(self) -> RelayKey:
        """Which sessions this channel may share: same relay, security and credentials."""
        r = self.relay
        secret = hashlib.sha256((r.password or "").encode()).hexdigest()
        return (r.host.lower(), r.port, r.security, r.username or "", secret, r.auth)

    async def aclose(self) -> None:
        return None

    async def open(self) -> aiosmtplib.SMTP:
        """Connect, secure and authenticate; raises ChannelError naming the failed step."""
        relay, settings = self.relay, self.settings
        self.step = "resolve"
        try:
            ips = await resolve_relay(relay.host, relay.port, settings.allow_private_relays)
        except UnicodeError as exc:  # the idna codec: an empty label, or one over 63 characters
            raise ChannelError(f"'{relay.host}' is not a valid host name", step="resolve") from exc
        # Dial the address we checked (no second lookup to rebind), but verify the certificate
        # against the name the user typed.
        self.step = "connect"
        sock = await _dial(ips, relay, settings.smtp_connect_timeout)
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            sock=sock,
            use_tls=relay.security == "tls",
            start_tls=False,
            local_hostname=settings.hostname,
            timeout=settings.smtp_command_timeout,
            # relays are always verified (unless turned off for tests): they hold credentials
            tls_context=tls_context("require", settings.smtp_ca_file, settings.smtp_verify_tls),
        )
        try:
            await asyncio.wait_for(client.connect(), settings.smtp_connect_timeout)
        except (ssl.SSLError, aiosmtplib.SMTPConnectError) as exc:
            sock.close()
            if _is_cert_error(exc):
                raise ChannelError(_cert_message(relay.host, exc), step="tls") from exc
            raise ChannelError(
                f"could not connect to {relay.host}:{relay.port}: {_words(exc)}", step="connect"
            ) from exc
        except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
            sock.close()
            raise ChannelError(
                f"could not connect to {relay.host}:{relay.port}: {_words(exc)}", step="connect"
            ) from exc
        except BaseException:  # cancelled (the relay test's deadline): do not leak the socket
            sock.close()
            raise
        try:
            if relay.security == "starttls":
                self.step = "tls"
                await self._starttls(client)
            if relay.username:
                self.step = "auth"
                await self._auth(client)
        except BaseException:
            client.close()
            raise
        return client

    async def _starttls(self, client: aiosmtplib.SMTP) -> None:
        await client.ehlo()
        if not client.supports_extension("starttls"):
            raise ChannelError(
                f"{self.relay.host} does not offer STARTTLS; choose security 'tls' or 'none'",
                step="tls",
            )
        try:
            await client.starttls(server_hostname=self.relay.host)
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
            if _is_cert_error(exc):
                raise ChannelError(_cert_message(self.relay.host, exc), step="tls") from exc
            raise ChannelError(f"TLS negotiation failed: {_words(exc)}", step="tls") from exc

    async def _auth(self, client: aiosmtplib.SMTP) -> None:
        relay = self.relay
        user, password = relay.username or "", relay.password or ""
        try:
            if relay.auth == "plain":
                await client.auth_plain(user, password)
            elif relay.auth == "login":
                await client.auth_login(user, password)
            elif relay.auth == "xoauth2":
                await client.auth_xoauth2(user, password)
            else:
                await client.login(user, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ChannelError(
                f"the relay rejected the username or password: {exc.code} {exc.message}",
                step="auth",
            ) from exc
        except aiosmtplib.SMTPException as exc:
            raise ChannelError(f"authentication failed: {_words(exc)}", step="auth") from exc

    async def check(self) -> RelayCheck:
        """The connection test behind POST /delivery-channel/smtp/test. It ends within
        `relay_test_timeout` seconds however slowly the relay answers (each command alone
        may wait `smtp_command_timeout`, which is far longer)."""
        deadline = self.settings.relay_test_timeout
        try:
            return await asyncio.wait_for(self._check(), deadline)
        except TimeoutError:
            return RelayCheck(
                False,
                self.step,
                f"the test of {self.relay.host}:{self.relay.port} timed out after "
                f"{deadline:g} seconds at the {self.step} step: the relay stopped answering",
            )

    async def _check(self) -> RelayCheck:
        try:
            client = await self.open()
        except ChannelError as exc:
            return RelayCheck(False, exc.step, str(exc))
        await _quit(client)
        return RelayCheck(True, "done", f"connected to {self.relay.host} and authenticated")

    async def deliver(self, message: OutboundMessage) -> list[Outcome]:
        if self.sessions is None:
            try:
                client = await self.open()
            except ChannelError as exc:
                return self._not_opened(message, exc)
            try:
                return (await self._transaction(client, message))[0]
            finally:
                await _quit(client)
        for _ in range(2):  # a second time only when a reused session was found broken
            try:
                session, reused = await self.sessions.acquire(self)
            except ChannelError as exc:
                return self._not_opened(message, exc)
            end: _End = "broken"
            try:
                if session.dirty:
                    try:
                        await session.client.rset()
                        session.dirty = False
                    except (aiosmtplib.SMTPException, OSError):
                        end = "broken-before-mail"
                        continue
                outcomes, end = await self._transaction(session.client, message)
                session.sent += 1
            finally:
                session.dirty = end == "dirty"
                await self.sessions.release(self.key, session, keep=end in ("clean", "dirty"))
            if end != "broken-before-mail" or not reused:
                return outcomes
        return _lost(message, ConnectionError("the relay closed the session"), self.relay.host)

    def _not_opened(self, message: OutboundMessage, exc: ChannelError) -> list[Outcome]:
        attention = str(exc) if exc.step in ("auth", "tls", "resolve") else None
        return outcomes_for_all(
            message,
            state=DeliveryState.DEFERRED,
            reason=REASON_AUTH_FAILURE if exc.step == "auth" else "networkerror",
            diagnostic=str(exc),
            remote_mta=self.relay.host,
            needs_attention=attention,
        )

    async def _transaction(
        self, client: aiosmtplib.SMTP, message: OutboundMessage
    ) -> tuple[list[Outcome], _End]:
        """The outcomes, and how the session was left: `clean` (DATA answered), `dirty` (no
        DATA: RSET before reuse), `broken-before-mail` (lost at MAIL: nothing accepted) or
        `broken`."""
        host = self.relay.host
        options = ["SMTPUTF8"] if message.needs_smtputf8 else []
        try:
            await client.mail(message.from_address, options=options, encoding="utf-8")
        except aiosmtplib.SMTPResponseException as exc:
            fields = _reply_fields(exc.code, exc.message, host)
            return outcomes_for_all(message, **fields), "dirty"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _lost(message, exc, host), "broken-before-mail"
        outcomes: dict[str, Outcome] = {}
        accepted = []
        for r in message.recipients:
            try:
                await client.rcpt(r.address, encoding="utf-8")
                accepted.append(r)
            except aiosmtplib.SMTPResponseException as exc:
                outcomes[r.delivery_id] = Outcome(
                    r.delivery_id, r.address, **_reply_fields(exc.code, exc.message, host)
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                return list(outcomes.values()) + _lost(message, exc, host, skip=outcomes), "broken"
        if not accepted:
            return list(outcomes.values()), "dirty"
        try:
            reply = await client.data(message.raw)
            fields = _reply_fields(reply.code, reply.message, host)
        except aiosmtplib.SMTPResponseException as exc:
            fields = _reply_fields(exc.code, exc.message, host)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return list(outcomes.values()) + _lost(message, exc, host, skip=outcomes), "broken"
        for r in accepted:
            outcomes[r.delivery_id] = Outcome(r.delivery_id, r.address, **fields)
        return list(outcomes.values()), "clean"


# How a transaction left its session (see SmtpChannel._transaction).
_End = Literal["clean", "dirty", "broken-before-mail", "broken"]
RelayKey = tuple[str, int, str, str, str, str]


@dataclass
class RelaySession:
    client: aiosmtplib.SMTP
    sent: int = 0  # messages sent over it
    last_used: float = field(default_factory=time.monotonic)
    dirty: bool = False  # the last transaction ended before DATA: RSET before the next


class _Slot:
    def __init__(self) -> None:
        self.idle: list[RelaySession] = []
        self.count = 0  # sessions open, idle ones included
        self.freed = asyncio.Condition()


class RelaySessions:
    """Open, authenticated relay sessions kept across messages, per relay and credentials."""

    def __init__(
        self, max_connections: int = 3, max_messages: int = 100, idle_seconds: float = 5.0
    ) -> None:
        self.max_connections = max(1, max_connections)
        self.max_messages = max(1, max_messages)
        self.idle_seconds = idle_seconds
        self._slots: dict[RelayKey, _Slot] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0

    async def acquire(self, channel: SmtpChannel) -> tuple[RelaySession, bool]:
        """An idle session of the channel's relay, or a new one (ChannelError if it cannot be
        opened); waits while the relay's connection limit is reached. True when reused."""
        slot = self._slots.setdefault(channel.key, _Slot())
        async with slot.freed:
            while True:
                for stale in self._take_stale(slot):
                    stale.client.close()
                while slot.idle:
                    session = slot.idle.pop()
                    if session.client.is_connected:
                        return session, True
                    slot.count -= 1  # the relay closed it meanwhile
                    session.client.close()
                if slot.count < self.max_connections:
                    slot.count += 1
                    break
                await slot.freed.wait()
        try:
            client = await channel.open()
        except BaseException:
            async with slot.freed:
                slot.count -= 1
                slot.freed.notify()
            raise
        self.opened += 1
        return RelaySession(client), False

    async def release(self, key: RelayKey, session: RelaySession, *, keep: bool) -> None:
        slot = self._slots[key]
        keep = keep and session.client.is_connected and session.sent < self.max_messages
        if keep:
            session.last_used = time.monotonic()
        else:
            await _quit(session.client)
        async with slot.freed:
            if keep:
                slot.idle.append(session)
            else:
                slot.count -= 1
            slot.freed.notify()
        if keep and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.create_task(self._reap())

    def _take_stale(self, slot: _Slot) -> list[RelaySession]:
        """Remove idle sessions past their idle time (caller holds slot.freed)."""
        now = time.monotonic()
        stale = [s for s in slot.idle if now - s.last_used >= self.idle_seconds]
        if stale:
            slot.idle = [s for s in slot.idle if s not in stale]
            slot.count -= len(stale)
            slot.freed.notify(len(stale))
        return stale

    async def _reap(self) -> None:
        while any(slot.idle for slot in self._slots.values()):
            await asyncio.sleep(self.idle_seconds / 2)
            for slot in list(self._slots.values()):
                async with slot.freed:
                    stale = self._take_stale(slot)
                for s in stale:
                    await _quit(s.client)

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
                await _quit(s.client)
        self._slots.clear()


async def _quit(client: aiosmtplib.SMTP) -> None:
    """QUIT is a courtesy: a short wait, never an error."""
    try:
        async with asyncio.timeout(5.0):
            await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


class _ReplyFields(TypedDict, total=False):
    """The `Outcome` fields one SMTP reply decides (passed on as keyword arguments)."""

    state: Required[DeliveryState]
    reply_code: int
    status: str | None
    diagnostic: str
    reason: str | None
    hard: bool | None
    remote_mta: str


def _reply_fields(code: int, text: str, host: str) -> _ReplyFields:
    text = " ".join(text.split())
    if 200 <= code < 300:
        return {
            "state": DeliveryState.SENT,
            "reply_code": code,
            "status": find_status(text),
            "diagnostic": text,
            "remote_mta": host,
        }
    cls = classify_reply(code, None, text)
    return {
        "state": DeliveryState.DEFERRED if 400 <= code < 500 else DeliveryState.FAILED,
        "reply_code": code,
        "status": cls.status,
        "diagnostic": f"{code} {text}",
        "reason": cls.reason,
        "hard": cls.hard if code >= 500 else False,
        "remote_mta": host,
    }


def _lost(
    message: OutboundMessage, exc: BaseException, host: str, skip: dict[str, Outcome] | None = None
) -> list[Outcome]:
    """The connection dropped or timed out: every undecided recipient is deferred."""
    return [
        Outcome(
            r.delivery_id,
            r.address,
            DeliveryState.DEFERRED,
            reason="networkerror",
            diagnostic=f"connection to {host} lost: {_words(exc)}",
            remote_mta=host,
        )
        for r in message.recipients
        if not skip or r.delivery_id not in skip
    ]


async def _dial(ips: list[str], relay: SmtpRelay, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    last: BaseException | None = None
    for ip in ips:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, relay.port)), timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise ChannelError(
        f"could not connect to {relay.host}:{relay.port}: {_words(last or OSError())}",
        step="connect",
    ) from last


def _is_cert_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _cert_message(host: str, exc: BaseException) -> str:
    return f"the certificate of {host} is not valid: {_words(exc)}"


def _words(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text


# Microsoft 365's published limits per mailbox, applied when the relay is Microsoft's.
M365_DAILY = 10_000
M365_PER_MINUTE = 30
M365_HOSTS = ("office365.com", "outlook.com", "microsoft.com")


def smtp_limits(relay_host: str | None = None, **_: object) -> Limits:
    host = (relay_host or "").lower().rstrip(".")
    if any(host == h or host.endswith("." + h) for h in M365_HOSTS):
        return Limits(daily_cap=M365_DAILY, per_minute=M365_PER_MINUTE)
    return Limits()


async def check_relay(relay: SmtpRelay, settings: Settings) -> RelayCheck:
    return await SmtpChannel(relay, settings).check()


MODULE = ChannelModule(
    name=ChannelName.SMTP.value,
    limits=smtp_limits,
    settings_schema=SmtpRelay,
    check=check_relay,
)
