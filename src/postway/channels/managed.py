"""The managed channel: Postway's own MTA delivers straight to each recipient's mail server.

Each recipient gets its own transaction, because the envelope sender is a VERP address that
names that recipient's delivery: a bounce arriving later identifies its delivery without
parsing guesswork. The message is DKIM-signed once, under Postway's domain.
"""

from __future__ import annotations

import asyncio
import logging
import re

from postway.channels.base import ChannelModule, OutboundMessage, Outcome, Recipient
from postway.config import Settings
from postway.domain.bounce_reasons import classify_reply
from postway.domain.states import REASON_CHANNEL_ERROR, ChannelName, DeliveryState
from postway.domain.throttle import Limits
from postway.mta.dkim import DkimSigner, load_or_create_key
from postway.mta.pool import Attempt, NoServerReached, PoolConfig, SessionPool
from postway.mta.resolver import Resolver, RouteError, RouteRefused
from postway.mta.smtp_client import (
    ConnectionLost,
    NotSupported,
    OutcomeUnknown,
    Reply,
    Timeouts,
    TlsMode,
    WireMessage,
    tls_context,
)
from postway.mta.transport import parse_transport
from postway.mta.verp import make_return_path

log = logging.getLogger(__name__)

_WAIT_RE = re.compile(
    r"(?:try|retry|come back)\w*\s+(?:again\s+)?(?:in|after)\s+(\d+)\s*"
    r"(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\b",
    re.IGNORECASE,
)
_UNIT = {"s": 1, "m": 60, "h": 3600}
_QUEUE_ID_RES = (
    re.compile(r"queued as\s+<?([\w.@-]+?)>?(?:\s|$)", re.IGNORECASE),
    re.compile(r"\bid=([\w.@-]+)", re.IGNORECASE),
    re.compile(r"\b([\w.-]+)\s+-\s+gsmtp\b"),
)


def timeouts_from_settings(settings: Settings) -> Timeouts:
    """Connect and command timeouts from settings; the DATA phases keep their RFC defaults
    unless the command timeout was lowered below them."""
    cmd = settings.smtp_command_timeout
    base = Timeouts()
    return Timeouts(
        connect=settings.smtp_connect_timeout,
        greeting=cmd,
        ehlo=cmd,
        starttls=min(base.starttls, cmd),
        mail=cmd,
        rcpt=cmd,
        data_init=min(base.data_init, cmd),
        data_block=min(base.data_block, cmd),
        final_dot=min(base.final_dot, cmd) if cmd < base.mail else base.final_dot,
        rset=min(base.rset, cmd),
        quit=min(base.quit, cmd),
    )


def retry_after(text: str) -> float | None:
    """Seconds a reply asks us to wait ("try again in 60 seconds"), if it names a wait."""
    m = _WAIT_RE.search(text)
    return float(int(m.group(1)) * _UNIT[m.group(2)[0].lower()]) if m else None


def queue_id(text: str) -> str | None:
    """The remote server's id for the accepted message, when its reply names one."""
    for pattern in _QUEUE_ID_RES:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


class ManagedChannel:
    name = ChannelName.MANAGED.value

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        pool: SessionPool | None = None,
        signer: DkimSigner | None = None,
        timeouts: Timeouts | None = None,
        tls_mode: TlsMode = "opportunistic",
        max_connections: int = 10,
        max_messages: int = 100,
        idle_seconds: float = 5.0,
        concurrency: int = 20,
        mx_port: int = 25,
    ) -> None:
        self.settings = settings
        self._secret = settings.resolved_secret_key()
        self.resolver = resolver or Resolver(
            settings.dns_nameservers,
            parse_transport(settings.transport),
            mx_port=mx_port,
            allow_private=settings.allow_private_relays,
        )
        self.pool = pool or SessionPool(
            PoolConfig(
                helo_name=settings.hostname,
                timeouts=timeouts or timeouts_from_settings(settings),
                tls_mode=tls_mode,
                tls_ctx=tls_context(tls_mode, settings.smtp_ca_file, settings.smtp_verify_tls),
                max_connections=max_connections,
                max_messages=max_messages,
                idle_seconds=idle_seconds,
            )
        )
        self.signer = signer or DkimSigner(
            load_or_create_key(
                settings.data_dir,
                settings.dkim_domain or settings.bounce_domain,
                settings.dkim_selector,
                settings.dkim_algorithm,
            )
        )
        self._concurrency = concurrency

    async def aclose(self) -> None:
        """Close every pooled session (politely, with QUIT)."""
        await self.pool.aclose()

    async def deliver(self, message: OutboundMessage) -> list[Outcome]:
        """One outcome per recipient; never raises for a recipient's failure."""
        # Signed, normalised and dot-stuffed once; every recipient's transaction sends these.
        signed = WireMessage.of(self.signer.sign(message.raw))
        gate = asyncio.Semaphore(self._concurrency)

        async def one(r: Recipient) -> Outcome:
            async with gate:
                try:
                    return await self._deliver_one(message, signed, r)
                except Exception as exc:  # a bug must not lose the other recipients' outcomes
                    log.exception("managed delivery to a recipient failed unexpectedly")
                    return _outcome(
                        r, DeliveryState.DEFERRED, reason=REASON_CHANNEL_ERROR,
                        diagnostic=f"internal error: {type(exc).__name__}",
                    )  # fmt: skip

        return list(await asyncio.gather(*(one(r) for r in message.recipients)))

    async def _deliver_one(
        self, message: OutboundMessage, signed: WireMessage, r: Recipient
    ) -> Outcome:
        _, at, domain = r.address.rpartition("@")
        if not at or not domain:
            return _outcome(
                r, DeliveryState.FAILED, reason=REASON_CHANNEL_ERROR,
                diagnostic=f"{r.address!r} is not an email address",
            )  # fmt: skip
        try:
            route = await self.resolver.route(domain.encode("idna").decode("ascii"))
        except UnicodeError:
            return _outcome(
                r, DeliveryState.BOUNCED, reason="hostunknown", hard=True, status="5.1.2",
                diagnostic=f"the domain {domain} is not a valid domain name",
            )  # fmt: skip
        except RouteRefused as exc:
            # Postway's own refusal, before any connection: failed, not a bounce, so the
            # recipient is not suppressed for what may be an operator's missing setting.
            return _outcome(
                r, DeliveryState.FAILED, reason=exc.reason, status=exc.status, hard=False,
                diagnostic=str(exc),
            )  # fmt: skip
        except RouteError as exc:
            state = DeliveryState.BOUNCED if exc.permanent else DeliveryState.DEFERRED
            return _outcome(
                r, state, reason=exc.reason, status=exc.status, hard=exc.permanent,
                diagnostic=str(exc),
            )  # fmt: skip
        sender = make_return_path(r.delivery_id, self._secret, self.settings.bounce_domain)
        smtputf8 = message.needs_smtputf8 or not r.address.isascii()
        try:
            attempt = await self.pool.deliver(route, sender, [r.address], signed, smtputf8=smtputf8)
        except NoServerReached as exc:
            return _outcome(
                r, DeliveryState.DEFERRED, reason="networkerror", hard=False, diagnostic=str(exc)
            )
        except OutcomeUnknown as exc:
            return _outcome(
                r, DeliveryState.DEFERRED, reason="networkerror", hard=False,
                diagnostic=str(exc), remote_mta=exc.host, detail={"outcome": "unknown"},
            )  # fmt: skip
        except ConnectionLost as exc:
            return _outcome(
                r, DeliveryState.DEFERRED, reason="networkerror", hard=False,
                diagnostic=str(exc), remote_mta=exc.host,
            )  # fmt: skip
        except NotSupported as exc:
            return _outcome(
                r, DeliveryState.FAILED, reason="contenterror", hard=False, diagnostic=str(exc),
                remote_mta=exc.host,
            )  # fmt: skip
        return _from_attempt(r, attempt)


def _from_attempt(r: Recipient, attempt: Attempt) -> Outcome:
    res = attempt.result
    rcpt = res.rcpts[r.address]
    if not res.mail.ok:
        reply, command = res.mail, "MAIL"
    elif not rcpt.ok or res.data is None:
        reply, command = rcpt, "RCPT"
    else:
        reply, command = res.data, "DATA"
    detail = {"remote_ip": attempt.address, "tls": "yes" if attempt.tls else "no"}
    text = " ".join(reply.text.split())
    if reply.ok:
        detail["reply"] = str(reply)
        qid = queue_id(text)
        if qid:
            detail["queue_id"] = qid
        return _outcome(
            r, DeliveryState.DELIVERED, reply_code=reply.code, status=reply.status,
            diagnostic=str(reply), remote_mta=attempt.host, detail=detail,
        )  # fmt: skip
    return _refusal(r, reply, command, attempt.host, detail)


def _refusal(
    r: Recipient, reply: Reply, command: str, host: str, detail: dict[str, str]
) -> Outcome:
    text = " ".join(reply.text.split())
    cls = classify_reply(reply.code, reply.status, text, command)
    temporary = reply.code < 500
    return _outcome(
        r,
        DeliveryState.DEFERRED if temporary else DeliveryState.BOUNCED,
        reply_code=reply.code,
        status=cls.status,
        diagnostic=str(reply),
        reason=cls.reason,
        hard=False if temporary else cls.hard,
        remote_mta=host,
        retry_after=retry_after(text) if temporary else None,
        detail={**detail, "command": command},
    )


def _outcome(r: Recipient, state: DeliveryState, **fields: object) -> Outcome:
    return Outcome(delivery_id=r.delivery_id, recipient=r.address, state=state, **fields)  # type: ignore[arg-type]


def managed_limits(**_: object) -> Limits:
    """Postway's own servers publish no per-mailbox limit; the admin's throttle applies."""
    return Limits()


# No settings of its own (they are Postway's: POSTWAY_MTA_*) and no connection to check.
MODULE = ChannelModule(name=ChannelName.MANAGED.value, limits=managed_limits)
