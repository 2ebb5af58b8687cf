"""Remote faults as data: what each peer does wrong, and the state Postway leaves the mail in.

One row per (channel, fault). `test_remote_faults.py` runs every row through the real worker
against a loopback peer that injects the fault and asserts the observed result equals the
row; `scripts/fault_table.py` renders the rows into docs/reliability.md. So the table in the
docs is the test's expectation, and neither can drift from the code.

Plain data only (no pytest, no peers): the renderer runs without the test dependencies.
`peer` holds keyword arguments of `peers.smtp.ScriptedSMTPServer` (SMTP rows) plus three of
this module's own: `tls` ("trusted": the test CA's certificate; "untrusted": a certificate
from a CA nobody trusts), `security` (the relay's setting, default "none") and `listen`
(False: nothing listens at the address). Gmail rows hold the stand-in's `fail_next`
arguments instead (`fault`, `retry_after`, `times`, `endpoint`) or `expire_tokens` / `revoke` (the
stand-in expires the account's access tokens early / revokes its grants).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

BEGIN = "<!-- faults:begin -->"
END = "<!-- faults:end -->"
REGENERATE = ".venv/bin/python scripts/fault_table.py"
CHECKED_BY = "tests/integration/test_remote_faults.py"

# The settings every row runs with (the defaults of `postway.config.Settings`, except the
# SMTP timeouts, lowered so the stalled-peer rows are quick).
RETRY_BASE = 300.0  # POSTWAY_RETRY_BASE_SECONDS: the first retry's delay, +-10 % jitter
JITTER = 0.1
COMMAND_TIMEOUT = 2.0  # POSTWAY_SMTP_COMMAND_TIMEOUT and _CONNECT_TIMEOUT for these rows
LIFETIME_DAYS = 5  # POSTWAY_QUEUE_LIFETIME_SECONDS

Channel = Literal["managed", "smtp", "gmail"]
NextKind = Literal["final", "schedule", "exact", "until-reconnect", "until-quota-reset"]


@dataclass(frozen=True)
class Next:
    """When the delivery is tried again, measured as next attempt time minus attempt time."""

    kind: NextKind
    seconds: float = 0.0  # "exact": the wait; "schedule": the nominal delay before jitter

    def render(self) -> str:
        if self.kind == "final":
            return "none (final)"
        if self.kind == "schedule":
            return f"{_span(self.seconds)} ± {JITTER:.0%} (retry schedule)"
        if self.kind == "exact":
            return f"{_span(self.seconds)} (the wait the peer named)"
        if self.kind == "until-reconnect":
            return f"parked until the user reconnects (at most the {LIFETIME_DAYS}-day lifetime)"
        return "parked until the quota resets (next midnight Pacific, at least 1 h)"


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


SCHEDULE = Next("schedule", RETRY_BASE)
FINAL = Next("final")


@dataclass(frozen=True)
class Case:
    channel: Channel
    fault: str  # what the peer does, in words
    phase: str  # where in the exchange
    peer: Mapping[str, Any]  # how the peer is scripted (see the module docstring)
    state: str  # the delivery's state after the attempt(s)
    next: Next
    reason: str | None  # the delivery's reason (bounce reason or Postway's own)
    event: str  # type of the delivery's last event
    note: str = ""
    tries: int = 1  # attempts made (the 2nd one asked for at once, as an operator would)
    big: bool = False  # a message large enough that a drop mid-DATA meets the client writing
    attempts: int | None = None  # attempts counted afterwards (None: same as tries)
    attention: bool = False  # the channel settings are flagged for the user to act
    tls: str | None = None  # managed: the "tls" detail of the delivered event ("yes"/"no")
    suppressed: bool = False  # the recipient is on the suppression list afterwards
    account: str | None = None  # gmail: the connected account's status afterwards
    diagnostic: str | None = None  # words the stored diagnostic contains
    require_tls: bool = False  # managed: run with POSTWAY_MTA_REQUIRE_TLS=1

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", f"{self.fault} {self.phase}".lower()).strip("-")
        strict = "-tls-required" if self.require_tls else ""
        return f"{self.channel}{strict}-{words}" + (f"-try{self.tries}" if self.tries > 1 else "")


def _both(
    fault: str, phase: str, peer: Mapping[str, Any], managed: tuple[Any, ...],
    smtp: tuple[Any, ...], attention: bool = False, suppressed: bool = False, **kw: Any,
) -> list[Case]:  # fmt: skip
    """The same fault for the managed channel and the custom relay: (state, next, reason,
    event[, note]) each; `attention`: the relay's settings are flagged for the user;
    `suppressed`: the managed channel's bounce puts the recipient on the suppression list."""
    rows = []
    for channel, expected in (("managed", managed), ("smtp", smtp)):
        state, nxt, reason, event, *note = expected
        rows.append(
            Case(
                channel, fault, phase, peer, state, nxt, reason, event,  # type: ignore[arg-type]
                *(note or [""]),
                attention=attention and channel == "smtp",
                suppressed=suppressed and channel == "managed",
                **kw,
            )
        )  # fmt: skip
    return rows


_D, _B, _F, _S, _OK = "deferred", "bounced", "failed", "sent", "delivered"
NET = "networkerror"
UNTRUSTED = {"tls": "untrusted", "starttls": True}
REFUSE_TLS = {"tls": "trusted", "command_replies": {"STARTTLS": "454 4.7.0 TLS not available"}}

SMTP_CASES: list[Case] = [
    *_both("421 greeting", "connect", {"greeting": "421 4.3.2 Service not available"},
           (_D, SCHEDULE, NET, "deferred", "the server is skipped; no other MX: retried"),
           (_D, SCHEDULE, NET, "deferred")),
    *_both("554 greeting", "connect", {"greeting": "554 5.3.2 No SMTP service here"},
           (_D, SCHEDULE, NET, "deferred",
            "skipped like Postfix's smtp_skip_5xx_greeting; retried until the lifetime ends"),
           (_D, SCHEDULE, NET, "deferred")),
    *_both("nothing listening", "connect", {"listen": False},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred")),
    *_both("421 to EHLO", "EHLO", {"command_replies": {"EHLO": "421 4.3.2 Try later"}},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, "notaccept", "deferred")),
    *_both("550 to EHLO", "EHLO", {"command_replies": {"EHLO": "550 5.5.1 No ESMTP"}},
           (_OK, FINAL, None, "delivered", "falls back to HELO and delivers"),
           (_S, FINAL, None, "sent", "falls back to HELO and sends")),
    *_both("550 to EHLO and HELO", "EHLO",
           {"command_replies": {"EHLO": "550 5.7.1 Go away", "HELO": "550 5.7.1 Go away"}},
           (_D, SCHEDULE, NET, "deferred", "the server is skipped; no other MX: retried"),
           (_F, FINAL, "blocked", "failed", "the HELO refusal is taken as MAIL's reply")),
    *_both("451 to MAIL", "MAIL", {"mail_reply": "451 4.3.0 Temporary failure"},
           (_D, SCHEDULE, "onhold", "deferred"), (_D, SCHEDULE, "onhold", "deferred")),
    *_both("550 to MAIL", "MAIL", {"mail_reply": "550 5.7.1 Sender rejected"},
           (_B, FINAL, "rejected", "bounced", "soft: the recipient is not suppressed"),
           (_F, FINAL, "rejected", "failed")),
    *_both("450 to RCPT", "RCPT", {"rcpt_default": "450 4.2.1 Mailbox busy"},
           (_D, SCHEDULE, "blocked", "deferred"), (_D, SCHEDULE, "blocked", "deferred")),
    *_both("421 to RCPT naming a wait", "RCPT",
           {"rcpt_default": "421 4.7.0 Too many connections, try again in 10 minutes"},
           (_D, Next("exact", 600), "toomanyconn", "deferred", "the named wait is honoured"),
           (_D, SCHEDULE, "toomanyconn", "deferred", "the named wait is not read: schedule")),
    *_both("550 to RCPT", "RCPT", {"rcpt_default": "550 5.1.1 No such user"},
           (_B, FINAL, "userunknown", "bounced", "hard: the address is suppressed"),
           (_F, FINAL, "userunknown", "failed"), suppressed=True),
    *_both("451 to DATA", "DATA", {"command_replies": {"DATA": "451 4.3.0 Try later"}},
           (_D, SCHEDULE, "onhold", "deferred"), (_D, SCHEDULE, "onhold", "deferred")),
    *_both("554 to DATA", "DATA", {"command_replies": {"DATA": "554 5.7.1 Not now, not ever"}},
           (_B, FINAL, "securityerror", "bounced"), (_F, FINAL, "securityerror", "failed")),
    *_both("451 after the final dot", "end of data",
           {"data_reply": "451 4.3.0 Temporary failure"},
           (_D, SCHEDULE, "onhold", "deferred"), (_D, SCHEDULE, "onhold", "deferred")),
    *_both("554 after the final dot", "end of data",
           {"data_reply": "554 5.7.1 Message rejected as spam"},
           (_B, FINAL, "spamdetected", "bounced"), (_F, FINAL, "spamdetected", "failed")),
    *_both("disconnect", "before the greeting", {"disconnect_at": "connect"},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred")),
    *_both("disconnect", "after EHLO, before its reply", {"disconnect_at": "ehlo"},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred")),
    *_both("disconnect", "after MAIL, before its reply", {"disconnect_at": "mail"},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred")),
    *_both("disconnect", "after RCPT, before its reply", {"disconnect_at": "rcpt"},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred")),
    *_both("disconnect", "during DATA (4 MB message)", {"disconnect_at": "data"},
           (_D, SCHEDULE, NET, "deferred"), (_D, SCHEDULE, NET, "deferred"), big=True),
    *_both("disconnect", "after the final dot, before the reply", {"disconnect_at": "dot"},
           (_D, SCHEDULE, NET, "unknown-outcome",
            "may have arrived: retried once, noted as a possible duplicate"),
           (_D, SCHEDULE, NET, "deferred",
            "not told apart from a drop before the dot: retried, no duplicate note or limit")),
    *_both("disconnect again", "after the final dot, before the reply",
           {"disconnect_at": "dot"},
           (_F, FINAL, NET, "failed", "a second unknown outcome is not retried"),
           (_D, Next("schedule", 2 * RETRY_BASE), NET, "deferred", "retried again"), tries=2),
    *_both("replies split across packets", "every reply", {"split_replies": True},
           (_OK, FINAL, None, "delivered"), (_S, FINAL, None, "sent")),
    *_both("stalled peer", "greeting", {"stall": {"connect": 30}},
           (_D, SCHEDULE, NET, "deferred", "timed out"), (_D, SCHEDULE, NET, "deferred",
           "timed out"), diagnostic="timed out"),
    *_both("stalled peer", "RCPT reply", {"stall": {"rcpt": 30}},
           (_D, SCHEDULE, NET, "deferred", "timed out"), (_D, SCHEDULE, NET, "deferred",
           "timed out"), diagnostic="timed out"),
    *_both("stalled peer", "after the final dot", {"stall": {"dot": 30}},
           (_D, SCHEDULE, NET, "unknown-outcome", "timed out; may have arrived"),
           (_D, SCHEDULE, NET, "deferred", "timed out"), diagnostic="timed out"),
    *_both("invalid certificate", "STARTTLS", {**UNTRUSTED, "security": "starttls"},
           (_OK, FINAL, None, "delivered",
            "opportunistic TLS (RFC 7435): encrypted, certificate not checked"),
           (_D, SCHEDULE, NET, "deferred", "relays are verified; the user is asked to act"),
           attention=True, tls="yes"),
    *_both("STARTTLS advertised, then 454", "STARTTLS", {**REFUSE_TLS, "security": "starttls"},
           (_OK, FINAL, None, "delivered", "opportunistic: carries on in plaintext"),
           (_D, SCHEDULE, NET, "deferred", "the relay's TLS setting is required"),
           attention=True, tls="no"),
]  # fmt: skip

REQUIRED_TLS_CASES: list[Case] = [
    Case("managed", "invalid certificate", "STARTTLS", UNTRUSTED, _D, SCHEDULE, NET, "deferred",
         "the certificate is verified: not sent", require_tls=True, diagnostic="TLS"),
    Case("managed", "STARTTLS advertised, then 454", "STARTTLS", REFUSE_TLS, _D, SCHEDULE, NET,
         "deferred", "not sent in plaintext", require_tls=True, diagnostic="STARTTLS"),
]  # fmt: skip

GMAIL_CASES: list[Case] = [
    Case("gmail", "429 rateLimitExceeded, Retry-After 900", "messages.send",
         {"fault": "rate_limit", "retry_after": "900"},
         _D, Next("exact", 900), "speeding", "deferred", "Retry-After honoured"),
    Case("gmail", "429 rateLimitExceeded, Retry-After 30", "messages.send",
         {"fault": "rate_limit", "retry_after": "30"},
         _D, SCHEDULE, "speeding", "deferred", "a wait shorter than the schedule: schedule"),
    Case("gmail", "403 userRateLimitExceeded", "messages.send",
         {"fault": "user_rate_limit"}, _D, SCHEDULE, "speeding", "deferred"),
    Case("gmail", "500 backendError", "messages.send",
         {"fault": "server_error"}, _D, SCHEDULE, "systemerror", "deferred"),
    Case("gmail", "503 unavailable", "messages.send",
         {"fault": "unavailable"}, _D, SCHEDULE, "systemerror", "deferred"),
    Case("gmail", "401 authError once", "messages.send",
         {"fault": "unauthorized"}, _S, FINAL, None, "sent",
         "the access token is refreshed and the send tried again, once; still connected",
         account="connected"),
    Case("gmail", "access token expired early at Google", "messages.send",
         {"expire_tokens": True}, _S, FINAL, None, "sent",
         "401, then refreshed and sent (a clock behind Google's)", account="connected"),
    Case("gmail", "401 authError, again after a refresh", "messages.send",
         {"fault": "unauthorized", "times": 2}, _D, Next("until-reconnect"),
         "channel-disconnected", "parked", "account marked needs_reconnect; no attempt spent",
         attempts=0, account="needs_reconnect"),
    Case("gmail", "grant revoked by the user", "messages.send, token",
         {"revoke": True}, _D, Next("until-reconnect"), "channel-disconnected", "parked",
         "401, then invalid_grant on refresh: needs_reconnect", attempts=0,
         account="needs_reconnect"),
    Case("gmail", "400 invalid_grant on token refresh", "token",
         {"fault": "invalid_grant", "endpoint": "token"}, _D, Next("until-reconnect"),
         "channel-disconnected", "parked", "account marked needs_reconnect", attempts=0,
         account="needs_reconnect"),
    Case("gmail", "500 on token refresh", "token",
         {"fault": "server_error", "endpoint": "token"}, _D, SCHEDULE, "systemerror",
         "deferred"),
    Case("gmail", "403 dailyLimitExceeded", "messages.send",
         {"fault": "daily_limit"}, _D, Next("until-quota-reset"), "channel-paused", "parked",
         "account paused; no attempt spent", attempts=0, account="paused"),
    Case("gmail", "429 daily sending quota, Retry-After 3600", "messages.send",
         {"fault": "sending_quota", "retry_after": "3600"}, _D, Next("exact", 3600),
         "channel-paused", "parked", "account paused; no attempt spent", attempts=0,
         account="paused"),
    Case("gmail", "400 invalidArgument", "messages.send",
         {"fault": "invalid_recipient"}, _F, FINAL, "rejected", "failed"),
]  # fmt: skip

CASES: list[Case] = SMTP_CASES + REQUIRED_TLS_CASES + GMAIL_CASES

CHANNEL_WORDS = {
    "managed": "managed (MX)",
    "smtp": "custom SMTP relay",
    "gmail": "Gmail API",
}


def render() -> str:
    """The markdown table of every case, with the line saying how it is made and checked."""
    lines = [
        f"Generated by `{REGENERATE}` from `tests/integration/fault_matrix.py`; every row is "
        f"an assertion of `{CHECKED_BY}` (a real worker against a loopback peer that injects "
        f"the fault; retry base {RETRY_BASE:g} s, SMTP timeouts {COMMAND_TIMEOUT:g} s).",
        "",
        "| channel | fault | phase | ends in state | next retry | reason / note |",
        "|---|---|---|---|---|---|",
    ]
    for c in CASES:
        state = c.state if c.tries == 1 else f"{c.state} (after try {c.tries})"
        words = "; ".join(w for w in (f"`{c.reason}`" if c.reason else "", c.note) if w)
        channel = CHANNEL_WORDS[c.channel] + (", TLS required" if c.require_tls else "")
        lines.append(
            f"| {channel} | {c.fault} | {c.phase} | {state} | {c.next.render()} | {words or '—'} |"
        )
    return "\n".join(lines) + "\n"


def section_of(text: str) -> str:
    """What stands between the markers of `text` (ValueError when they are missing)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def with_section(text: str, table: str) -> str:
    """`text` with only what stands between the markers replaced by `table`."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table + text[end:]
