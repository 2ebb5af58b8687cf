"""Reading a custom SMTP sender's bounces from their IMAP mailbox, never changing it.

A scan: resolve the server (non-global addresses refused unless allowed, as for relays) and
dial the address checked; TLS (implicit or STARTTLS) with the certificate verified against the
name the user typed, or plain only to a loopback server; LOGIN; EXAMINE (read-only select);
UID SEARCH for delivery-report-looking messages since the oldest send still awaiting its
verdict; RFC822.SIZE of the ones not read before; BODY.PEEK[] (bounded) of each one small
enough; each handed to `mailbox_match`, which parses, matches and remembers it.

Invariant: nothing in the mailbox changes. The session only ever sends LOGIN, CAPABILITY,
STARTTLS, EXAMINE, UID SEARCH, UID FETCH (RFC822.SIZE, BODY.PEEK), IDLE/DONE and LOGOUT:
no STORE, COPY, MOVE, EXPUNGE or SELECT exists in this module, and EXAMINE makes the server
refuse them anyway. BODY.PEEK does not set \\Seen.

The watcher (`ImapBounceScanner`) runs in the worker process: one task per configured
mailbox; after each scan it waits in IDLE when the server offers it (a new message ends the
wait at once), else `imap_poll_seconds`. imaplib is blocking, so each mailbox's session runs
in threads of the scanner's own pool, never the event loop's default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import select

from postway.bounces.mailbox_match import (
    IGNORED,
    MailboxOwner,
    Matched,
    apply_mailbox_report,
    oldest_awaiting_send,
    remember,
    seen_ids,
)
from postway.channels.smtp import resolve_relay
from postway.config import Settings
from postway.domain.states import ChannelName
from postway.errors import ChannelError
from postway.mta.smtp_client import tls_context
from postway.security import SecretBox
from postway.store.bounce_mailbox import ImapMailbox, mailbox_of, record_check
from postway.store.db import Database
from postway.store.models import ChannelSetting, utcnow

log = logging.getLogger("postway.bounces")

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]
CHANNELS = (ChannelName.SMTP.value,)
IDLE_MAX = 29 * 60.0  # RFC 2177: re-issue IDLE at least every 29 minutes
# Messages that look like delivery reports; each one is confirmed by parsing it.
REPORT_SIGNS = (
    'HEADER Content-Type "report"',
    'FROM "mailer-daemon"',
    'FROM "postmaster"',
    'SUBJECT "undeliver"',
    'SUBJECT "delivery status"',
    'SUBJECT "delivery fail"',
    'SUBJECT "failure notice"',
    'SUBJECT "returned mail"',
    'SUBJECT "not delivered"',
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FETCH_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_CHANGE_RE = re.compile(rb"^\* \d+ (?:EXISTS|RECENT)", re.IGNORECASE)


class ImapError(ChannelError):
    """The bounce mailbox could not be read; `step` names what failed (resolve, connect,
    tls, auth, select, read)."""


@dataclass(frozen=True, slots=True)
class MailboxCheck:
    """The connection test's answer: `step` names the first step that failed."""

    ok: bool
    step: str
    message: str


@dataclass
class ScanReport:
    """What one scan did."""

    skipped: bool = False  # no send awaits its verdict: the mailbox was not opened
    found: int = 0  # messages the search returned
    fetched: int = 0  # bodies fetched (not read before)
    too_large: int = 0
    results: list[Matched] = field(default_factory=list)
    idled: bool = False  # waited in IDLE after the scan

    @property
    def bounced(self) -> list[str]:
        return [d for r in self.results for d in r.bounced]


# --- one session (blocking; runs in a thread) -----------------------------------------------


class _Plain(imaplib.IMAP4):
    """IMAP4 dialling the address that was checked, keeping the typed name for TLS."""

    def __init__(self, host: str, ip: str, port: int, timeout: float) -> None:
        self._ip = ip
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self._ip, self.port), timeout)


class _Tls(imaplib.IMAP4_SSL):
    def __init__(self, host: str, ip: str, port: int, ctx: ssl.SSLContext, timeout: float) -> None:
        self._ip = ip
        super().__init__(host, port, ssl_context=ctx, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self._ip, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class ImapSession:
    """One logged-in, read-only IMAP session (blocking calls: run them in a thread)."""

    def __init__(self, client: imaplib.IMAP4, mailbox: ImapMailbox, timeout: float) -> None:
        self.client = client
        self.mailbox = mailbox
        self.timeout = timeout
        self.capabilities: set[str] = set()
        self.uidvalidity = ""

    @classmethod
    def open(
        cls, mb: ImapMailbox, ips: list[str], ctx: ssl.SSLContext, timeout: float
    ) -> ImapSession:
        """Connect, secure, log in; raises ImapError naming the step that failed."""
        host = mb.host.strip("[]")
        client: imaplib.IMAP4 | None = None
        last: BaseException | None = None
        for ip in ips:
            try:
                if mb.security == "tls":
                    client = _Tls(host, ip, mb.port, ctx, timeout)
                else:
                    client = _Plain(host, ip, mb.port, timeout)
                break
            except ssl.SSLCertVerificationError as exc:
                raise ImapError(f"the certificate of {mb.host} is not valid: {exc}", "tls") from exc
            except ssl.SSLError as exc:
                raise ImapError(f"TLS negotiation failed: {exc}", "tls") from exc
            except (OSError, imaplib.IMAP4.error) as exc:
                last = exc
        if client is None:
            raise ImapError(
                f"could not connect to {mb.host}:{mb.port}: {_words(last)}", "connect"
            ) from last
        session = cls(client, mb, timeout)
        try:
            session._secure_and_login(ctx)
        except BaseException:
            session.close()
            raise
        return session

    def _secure_and_login(self, ctx: ssl.SSLContext) -> None:
        mb, c = self.mailbox, self.client
        if mb.security == "starttls":
            if "STARTTLS" not in c.capabilities:
                raise ImapError(
                    f"{mb.host} does not offer STARTTLS; choose security 'tls'", "tls"
                )
            try:
                c.starttls(ssl_context=ctx)
            except ssl.SSLCertVerificationError as exc:
                raise ImapError(f"the certificate of {mb.host} is not valid: {exc}", "tls") from exc
            except (ssl.SSLError, OSError, imaplib.IMAP4.error) as exc:
                raise ImapError(f"TLS negotiation failed: {_words(exc)}", "tls") from exc
        try:
            c.login(mb.username, mb.password)
        except imaplib.IMAP4.error as exc:
            raise ImapError(
                f"the IMAP server rejected the username or password: {_words(exc)}", "auth"
            ) from exc
        except UnicodeEncodeError as exc:
            raise ImapError(
                "the username or password has characters IMAP LOGIN cannot send", "auth"
            ) from exc
        except OSError as exc:
            raise ImapError(
                f"the connection failed while logging in: {_words(exc)}", "auth"
            ) from exc
        typ, data = c.capability()
        if typ == "OK" and data:
            self.capabilities = {str(w, "ascii", "replace").upper() for w in data[-1].split()}

    def examine(self) -> str:
        """Open the folder read-only (EXAMINE); returns its UIDVALIDITY."""
        folder = self.mailbox.folder
        typ, data = self.client.select(f'"{folder}"', readonly=True)  # sends EXAMINE
        if typ != "OK":
            raise ImapError(f"the folder {folder} cannot be opened: {_text(data)}", "select")
        _, validity = self.client.response("UIDVALIDITY")
        self.uidvalidity = _text(validity) or "0"
        return self.uidvalidity

    def search(self, since: datetime) -> list[int]:
        """UIDs of report-looking messages that arrived on or after `since`'s day."""
        day = f"{since.day:02d}-{_MONTHS[since.month - 1]}-{since.year}"
        signs = "OR " * (len(REPORT_SIGNS) - 1) + " ".join(REPORT_SIGNS)
        typ, data = self.client.uid("SEARCH", f"SINCE {day} {signs}")
        if typ != "OK":
            raise ImapError(f"the search failed: {_text(data)}", "read")
        return sorted({int(w) for w in b" ".join(d for d in data if d).split() if w.isdigit()})

    def sizes(self, uids: list[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for i in range(0, len(uids), 200):
            chunk = ",".join(str(u) for u in uids[i : i + 200])
            typ, data = self.client.uid("FETCH", chunk, "(RFC822.SIZE)")
            if typ != "OK":
                raise ImapError(f"reading message sizes failed: {_text(data)}", "read")
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                uid, size = _FETCH_RE.search(line or b""), _SIZE_RE.search(line or b"")
                if uid and size:
                    out[int(uid.group(1))] = int(size.group(1))
        return out

    def fetch(self, uid: int, limit: int) -> bytes | None:
        """The message, at most `limit` bytes of it, without setting \\Seen (BODY.PEEK)."""
        typ, data = self.client.uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{limit}>)")
        if typ != "OK":
            raise ImapError(f"fetching a message failed: {_text(data)}", "read")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return bytes(item[1])
        return None  # expunged by another client meanwhile

    def idle(self, seconds: float) -> bool:
        """Wait in IDLE (RFC 2177) up to `seconds`; True when the server announced new mail.
        On a timeout the session is left unusable (the caller closes it)."""
        c = self.client
        tag = c._new_tag()  # type: ignore[attr-defined]
        c.send(tag + b" IDLE\r\n")
        if not c._get_line().startswith(b"+"):  # type: ignore[attr-defined]
            return False
        deadline = time.monotonic() + min(seconds, IDLE_MAX)
        changed = False
        while not changed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            c.sock.settimeout(left)
            try:
                line = c._get_line()  # type: ignore[attr-defined]
            except (TimeoutError, OSError):
                return False
            changed = bool(_CHANGE_RE.match(line))
        c.sock.settimeout(self.timeout)
        c.send(b"DONE\r\n")
        while not c._get_line().startswith(tag):  # type: ignore[attr-defined]
            pass
        return True

    def abort(self) -> None:
        """Break a blocking read from another thread (shutdown)."""
        with contextlib.suppress(OSError):
            self.client.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # noqa: BLE001 - closing a dead line is no error
            self.client.logout()
        with contextlib.suppress(OSError):
            self.client.shutdown()


def _text(data: Any) -> str:
    if isinstance(data, list | tuple):
        data = next((d for d in reversed(data) if d), b"")
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace").strip()
    return str(data or "").strip()


def _words(exc: BaseException | None) -> str:
    if exc is None:
        return "no address to connect to"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, imaplib.IMAP4.error) and exc.args:
        arg = exc.args[0]
        return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return str(exc) or type(exc).__name__


# --- the async side ------------------------------------------------------------------------


async def resolve_imap(mb: ImapMailbox, settings: Settings) -> list[str]:
    """The server's addresses, with the relays' refusal of non-global targets; plain IMAP
    (no TLS) only to a loopback server, so a password never crosses a network in clear."""
    try:
        ips = await resolve_relay(mb.host, mb.port, settings.allow_private_relays)
    except ChannelError as exc:
        raise ImapError(str(exc).replace("relays must", "mail servers must"), "resolve") from exc
    except UnicodeError as exc:
        raise ImapError(f"'{mb.host}' is not a valid host name", "resolve") from exc
    if mb.security == "none" and not all(ipaddress.ip_address(ip).is_loopback for ip in ips):
        raise ImapError(
            "IMAP without TLS is allowed only to a server on this machine (loopback); "
            "choose security 'tls' or 'starttls'",
            "resolve",
        )
    return ips


async def open_session(mb: ImapMailbox, settings: Settings, run: Runner) -> ImapSession:
    ips = await resolve_imap(mb, settings)
    ctx = tls_context("require", settings.smtp_ca_file, settings.smtp_verify_tls)
    return await run(ImapSession.open, mb, ips, ctx, settings.imap_timeout_seconds)


async def check_mailbox(mb: ImapMailbox, settings: Settings) -> MailboxCheck:
    """Connect, secure, log in and open the folder read-only; says which step failed."""
    session: ImapSession | None = None
    try:
        async with asyncio.timeout(settings.imap_timeout_seconds * 2):
            session = await open_session(mb, settings, asyncio.to_thread)
            await asyncio.to_thread(session.examine)
    except ImapError as exc:
        return MailboxCheck(False, exc.step, str(exc))
    except TimeoutError:
        return MailboxCheck(False, "connect", f"{mb.host}:{mb.port} stopped answering")
    finally:
        if session is not None:
            await asyncio.to_thread(session.close)
    return MailboxCheck(
        True, "done", f"logged in to {mb.host} and opened {mb.folder} (read-only)"
    )


async def scan_mailbox(
    db: Database,
    settings: Settings,
    owner: MailboxOwner,
    mb: ImapMailbox,
    *,
    run: Runner = asyncio.to_thread,
    idle_seconds: float = 0.0,
    on_session: Callable[[ImapSession | None], None] | None = None,
) -> ScanReport:
    """One scan of `mb` for `owner`'s bounces (see the module's docstring); then, when
    `idle_seconds` and the server offers IDLE, wait there for new mail."""
    since = await oldest_awaiting_send(db, owner, settings.imap_bounce_window_days)
    if since is None:
        return ScanReport(skipped=True)
    report = ScanReport()
    session = await open_session(mb, settings, run)
    if on_session is not None:
        on_session(session)
    try:
        validity = await run(session.examine)
        # IMAP SEARCH compares dates only, in the server's time zone: a day earlier is safe.
        uids = await run(session.search, since - timedelta(days=1))
        report.found = len(uids)
        keys = {u: f"{validity}:{u}" for u in uids}
        seen = await seen_ids(db, owner.user_id, mb.key, keys.values())
        new = [u for u in uids if keys[u] not in seen]
        sizes = await run(session.sizes, new) if new else {}
        limit = settings.imap_max_message_bytes
        for uid in new:
            if sizes.get(uid, 0) > limit:
                report.too_large += 1
                note = f"{sizes[uid]} bytes, over the {limit} read from a bounce mailbox"
                report.results.append(
                    await remember(db, owner, mb.key, keys[uid], Matched(IGNORED, note=note))
                )
                continue
            raw = await run(session.fetch, uid, limit)
            if raw is None:
                continue
            report.fetched += 1
            report.results.append(
                await apply_mailbox_report(db, settings, owner, mb.key, keys[uid], raw)
            )
        if idle_seconds > 0 and "IDLE" in session.capabilities:
            report.idled = True
            await run(session.idle, idle_seconds)
    finally:
        if on_session is not None:
            on_session(None)
        await run(session.close)
    return report


class ImapBounceScanner:
    """Watches every configured bounce mailbox (one task each) until `stop()`."""

    def __init__(self, db: Database, settings: Settings, box: SecretBox) -> None:
        self.db = db
        self.settings = settings
        self.box = box
        self._threads = ThreadPoolExecutor(16, thread_name_prefix="postway-imap")
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._sessions: dict[str, ImapSession] = {}
        self._stop = asyncio.Event()

    async def _run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(fn, *args))

    async def run(self) -> None:
        """Start a watcher for each configured mailbox; look for new ones every poll."""
        poll = self.settings.imap_poll_seconds
        try:
            while not self._stop.is_set():
                try:
                    for row_id in await self._configured():
                        task = self._watchers.get(row_id)
                        if task is None or task.done():
                            self._watchers[row_id] = asyncio.create_task(self._watch(row_id))
                except Exception:  # noqa: BLE001 - a database hiccup: look again next round
                    log.exception("listing bounce mailboxes failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll)
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        for session in list(self._sessions.values()):
            session.abort()

    async def _shutdown(self) -> None:
        for session in list(self._sessions.values()):
            session.abort()
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _configured(self) -> list[str]:
        async with self.db.reader() as s:
            rows = await s.scalars(
                select(ChannelSetting.id).where(
                    ChannelSetting.user_id.is_not(None), ChannelSetting.imap_host.is_not(None)
                )
            )
            return list(rows)

    async def _watch(self, row_id: str) -> None:
        """Scan one mailbox again and again: at once after IDLE reports new mail (or runs
        out), else every poll; ends when the mailbox is no longer configured."""
        poll = self.settings.imap_poll_seconds
        while not self._stop.is_set():
            async with self.db.reader() as s:
                row = await s.get(ChannelSetting, row_id)
                mb = mailbox_of(row, self.box) if row is not None else None
            if row is None or mb is None or row.user_id is None:
                return
            owner = MailboxOwner(row.org_id, row.user_id, CHANNELS)
            idled = False
            error: str | None = None
            try:
                report = await scan_mailbox(
                    self.db, self.settings, owner, mb, run=self._run_blocking,
                    idle_seconds=poll, on_session=partial(self._track, row_id),
                )  # fmt: skip
                idled = report.idled
                if report.bounced:
                    log.info("bounce mailbox of user %s: %d deliveries bounced",
                             owner.user_id, len(report.bounced))  # fmt: skip
            except ImapError as exc:
                error = str(exc)
                log.warning("bounce mailbox of user %s: %s", owner.user_id, exc)
            except (OSError, imaplib.IMAP4.error) as exc:
                error = f"the connection to {mb.host} failed: {_words(exc)}"
                log.warning("bounce mailbox of user %s: %s", owner.user_id, error)
            except Exception:  # noqa: BLE001 - one mailbox's bug must not stop the others
                error = "scanning failed (see the server log)"
                log.exception("bounce mailbox of user %s: scan failed", owner.user_id)
            with contextlib.suppress(Exception):
                async with self.db.session() as s, s.begin():
                    await record_check(s, row_id, error, utcnow())
            if not idled or error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll)

    def _track(self, row_id: str, session: ImapSession | None) -> None:
        if session is None:
            self._sessions.pop(row_id, None)
        else:
            self._sessions[row_id] = session
