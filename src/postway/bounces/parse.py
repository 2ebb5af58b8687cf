"""parse_bounce: one entry point from raw bytes to a BounceReport, for every format."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from email.message import Message

from postway.bounces.dsn import (
    DsnRecipient,
    delivery_status_text,
    field_blocks,
    human_text,
    parse_dsn,
    recipients_from_blocks,
    reporting_mta,
    returned_headers,
)
from postway.bounces.engines import engine_decision, report_signs
from postway.bounces.feedback import is_auto_reply, parse_arf, parse_ses
from postway.bounces.formats import (
    ProseRecipient,
    error_text,
    literal_command,
    prose_recipients,
    smtp_command,
)
from postway.bounces.mime import addresses, first_address, header, parse_message
from postway.bounces.model import BounceReport, BounceResult
from postway.bounces.providers import provider_decision
from postway.domain.bounce_reasons import (
    RETRY_REASONS,
    ReplyClass,
    classify_reply,
    decide,
    find_code,
    is_hard,
    matches,
)
from postway.domain.bounce_rules import Decision
from postway.domain.regex_anchors import Prefiltered

_DELAY_RE = re.compile(
    r"warning message only|has been delayed|delivery (?:is |has been )?delayed|will (?:continue"
    r" to )?(?:be )?retr(?:y|ied)|still trying|not yet been delivered|delivery status "
    r"notification \(delay\)|delayed mail|delay(?:ed)? notification", re.IGNORECASE)
_BOUNCE_SIGNAL_RE = re.compile(
    r"undeliver|could not be delivered|delivery (?:has )?failed|permanent(?:ly)? (?:error|fatal)"
    r"|returned mail|failure notice|delivery status notification|mail delivery|not delivered"
    r"|unable to deliver|was not delivered|delivery to the following|rejected|\b[45]\d\d[ -]"
    r"|\b[45]\.\d\.\d", re.IGNORECASE)
# Behind their literals, and run plain over the lower-cased text (`regex_anchors`): a
# case-folding alternation costs about 1.5 ms over 20 KB of report, the plain twin a tenth.
_DELAY_FAST = Prefiltered(_DELAY_RE)
_BOUNCE_SIGNAL_FAST = Prefiltered(_BOUNCE_SIGNAL_RE)
_VAGUE = ("onhold", "undefined", "systemerror", "securityerror")
# Bounds on the work per email, whatever arrives (the text read of each part and header is
# bounded in `mime`): a bounce's verdict is in its first pages, and more than a thousand
# recipients is an attack or a list explosion whose first entries tell the story.
_MAX_BYTES = 1_000_000
_MAX_RECIPIENTS = 1000


_log = logging.getLogger(__name__)
# Exceptions the safety net caught, by type, in this process (read by postway.metrics; the
# intake's worker processes send theirs back with each report, see `isolation`).
_caught: Counter[str] = Counter()
_caught_lock = threading.Lock()


def parse_bounce(raw: bytes) -> BounceReport:
    """Parse one email. Never raises: anything unreadable is kind "none".

    An exception inside the parser is a bug, not a verdict on the email: it is counted
    (`parser_exceptions`), logged by type (never with the email's text) and carried in the
    report's `parser_error`; tests call `parse_bounce_strict` so that it fails them."""
    try:
        return parse_bounce_strict(raw)
    except Exception as exc:  # noqa: BLE001 - a hostile email must not stop intake
        name = type(exc).__name__
        note_parser_exception(name)
        _log.warning("bounce parser raised %s; the email is treated as not a bounce", name)
        return BounceReport("none", [], parser_error=name)


def parse_bounce_strict(raw: bytes) -> BounceReport:
    """Parse one email, letting any internal exception through (for tests and tools)."""
    return _parse(raw[:_MAX_BYTES])


def note_parser_exception(name: str) -> None:
    """Count one exception the safety net caught (also called for a worker's report)."""
    with _caught_lock:
        _caught[name] += 1


def parser_exceptions() -> dict[str, int]:
    """How many exceptions of each type the safety net caught in this process."""
    with _caught_lock:
        return dict(_caught)


def _parse(raw: bytes) -> BounceReport:
    msg = parse_message(raw)
    arf = parse_arf(msg)
    if arf is not None:
        return arf
    body = human_text(msg)
    ses = parse_ses(msg, body)
    if ses is not None:
        return ses
    sent_by = _own_addresses(msg)
    dsn = parse_dsn(msg)
    if not dsn and delivery_status_text(msg) is None:
        # Some MTAs write the DSN fields into the text body instead of their own part.
        dsn = [r for r in recipients_from_blocks(field_blocks(error_text(body))) if r.recipient]
    if dsn:
        return _from_dsn(msg, dsn, body, sent_by)
    if is_auto_reply(msg):
        return _auto_reply(msg, body)
    return _from_prose(msg, body, sent_by)


def _own_addresses(msg: Message) -> set[str]:
    """Addresses that are the bounce's own parties (the original sender, the daemon)."""
    own = set(addresses(header(msg, "From")) + addresses(header(msg, "To")))
    original = returned_headers(msg)
    if original is not None:
        own.update(addresses(header(original, "From")))
        own.update(addresses(header(original, "Return-Path")))
    return own


def _kind(results: list[BounceResult], text: str) -> str:
    if results and all(r.reason == "delivered" for r in results):
        return "delivered"
    actions = {r.action for r in results}
    if actions and actions <= {"delayed"}:
        return "delay"
    if not actions - {None} and _DELAY_FAST.search(text):
        return "delay"
    return "bounce"


def _from_dsn(
    msg: Message, dsn: list[DsnRecipient], body: str, own: set[str]
) -> BounceReport:
    context = error_text(body)
    prose = {p.recipient: p.text for p in prose_recipients(context, own)}
    results: list[BounceResult] = []
    reporter = reporting_mta(msg)
    report_text = f"{body}\n{delivery_status_text(msg) or ''}"
    signs = report_signs(msg, report_text)
    for entry in dsn[:_MAX_RECIPIENTS]:
        recipient = entry.recipient or _fallback_recipient(msg)
        words = entry.diagnostic
        nearby = prose.get(recipient or "", context if len(dsn) == 1 else "")
        if not words.strip() and recipient in prose:
            words = nearby.strip()[:2000]  # the report says it in prose only
        elif _MULTILINE_RE.match(words):
            words = _whole_reply(words, nearby or context)
        command = smtp_command(words) or smtp_command(nearby) or literal_command(words)
        status = _clean_status(entry.status, words)
        dtype = entry.diagnostic_type
        label = engine_decision(msg, words or nearby, status, report_text, signs)
        preset = label.reason if label else None
        known = None if preset and preset not in RETRY_REASONS else provider_decision(
            recipient, entry.remote_mta, words or nearby, status, command, reporter)
        decision = known or decide(status, words, command, entry.action,
                                   diagnostic_type=dtype, preset=preset, label=label,
                                   explanation=context if len(dsn) == 1 else "")
        if decision.reason in ("onhold", "undefined") and nearby:
            better = decide(status, f"{words}\n{nearby}", command, entry.action,
                            diagnostic_type=dtype, preset=preset, label=label)
            decision = better if better.reason not in ("onhold", "undefined") else decision
        reason = decision.reason
        results.append(BounceResult(
            recipient=recipient, status=status, reason=reason,
            hard=is_hard(reason, status),
            diagnostic=words or nearby.strip()[:2000],
            remote_mta=entry.remote_mta, action=entry.action,
            rule=decision.rule, rule_source=decision.source, evidence=decision.evidence,
        ))
    return BounceReport(_kind(results, body), results)  # type: ignore[arg-type]


_MULTILINE_RE = re.compile(r"\s*([245]\d\d)-")
_REPLY_LINE_RE = re.compile(r"^[ \t]*(?:<<<[ \t]*)?([245]\d\d)[- ](.*)$", re.MULTILINE)


def _whole_reply(first: str, transcript: str) -> str:
    """A multi-line SMTP reply ("552-5.7.0 ...") that the DSN cut to its first line, joined
    again from the session transcript in the report's text when it is there."""
    code = first.strip()[:3]
    lines = [m.group(2).strip() for m in _REPLY_LINE_RE.finditer(transcript[:50_000])
             if m.group(1) == code]
    return f"{code} {' '.join(lines)}" if len(lines) > 1 else first


def _clean_status(status: str | None, words: str) -> str | None:
    """A usable enhanced status: "5.1.1" from "5.1.1 (user unknown)", else from the text."""
    from postway.domain.bounce_reasons import derive_status, find_status

    found = find_status(status or "")
    if found and found not in ("5.0.0", "4.0.0", "4.4.7"):
        return found
    return derive_status(find_code(status or ""), None, words) if not found else (
        find_status(words) or found)


def _fallback_recipient(msg: Message) -> str | None:
    """The recipient when the report names none: X-Failed-Recipients, else the returned
    message's envelope or To header."""
    for name in ("X-Failed-Recipients", "X-Original-To"):
        address = first_address(header(msg, name))
        if address:
            return address
    original = returned_headers(msg)
    if original is not None:
        for name in ("X-Original-To", "Delivered-To", "To"):
            address = first_address(header(original, name))
            if address:
                return address
    return None


def _auto_reply(msg: Message, body: str) -> BounceReport:
    words = body[:5000]
    who = first_address(header(msg, "From"))
    if matches("suspend", words.lower()) or matches("userunknown", words.lower()):
        # An auto-reply announcing that the mailbox is gone is a (soft) bounce.
        decision = decide(None, words)
        return BounceReport("bounce", [BounceResult(
            recipient=first_address(words) or who, status="5.0.0", reason=decision.reason,
            hard=False, diagnostic=words.strip()[:2000], action="failed", rule=decision.rule,
            rule_source=decision.source, evidence=decision.evidence)])
    return BounceReport("auto-reply", [BounceResult(
        recipient=who, status=None, reason="vacation", hard=False, action="auto-reply",
        rule="report.auto-reply", rule_source="RFC 3834 (Auto-Submitted: auto-replied) and "
        "the usual vacation headers", evidence="an automatic reply, not a failure")])


# A mailing-list host refusing a post refuses the poster, i.e. the sender.
_LIST_POST_REFUSED = Decision("rejected", "report.list-post-refused",
                              "Google Groups / mailing-list hosts refuse posts from "
                              "non-members: the sender is refused", "a group address")
_DELAY_NOTICE = Decision("expired", "report.delay-notice",
                         "RFC 3464 section 2.3.3 (Action: delayed) and the MTAs' 'warning: "
                         "message delayed' notices", "a delay notice")


def _is_group(address: str | None) -> bool:
    domain = (address or "").rpartition("@")[2]
    return domain.startswith(("googlegroups.", "groups.")) or domain.endswith(".googlegroups.com")


def _from_prose(msg: Message, body: str, own: set[str]) -> BounceReport:
    text = error_text(body)
    failed = addresses(header(msg, "X-Failed-Recipients"))
    found = prose_recipients(text, own)
    if failed:
        by_address = {p.recipient: p.text for p in found}
        found = [ProseRecipient(a, by_address.get(a, text)) for a in failed]
    if not found:
        subject = header(msg, "Subject")
        if not (_BOUNCE_SIGNAL_FAST.search(subject) or _BOUNCE_SIGNAL_FAST.search(text[:5000])):
            return BounceReport("none", [])
        found = [ProseRecipient(_fallback_recipient(msg) or "", text)]
    delayed = bool(_DELAY_FAST.search(text))
    whole: ReplyClass | None = None  # the report's words at large, classified once
    signs = report_signs(msg, text)
    results: list[BounceResult] = []
    for item in found[:_MAX_RECIPIENTS]:
        words = item.text
        command = smtp_command(words) or literal_command(words)
        c = classify_reply(None, None, words, command, diagnostic_type="")
        decision = c.decision
        if c.reason in ("onhold", "undefined") and words is not text:
            whole = whole or classify_reply(None, None, text, smtp_command(text))
            c = ReplyClass(whole.reason, whole.hard, c.status or whole.status)
            decision = whole.decision
        if c.reason in ("onhold", "undefined") and _is_group(item.recipient):
            c = ReplyClass("rejected", False, c.status)
            decision = _LIST_POST_REFUSED
        label = engine_decision(msg, words, c.status, text, signs)
        preset = label.reason if label else None
        known = None if preset and preset not in RETRY_REASONS else provider_decision(
            item.recipient, None, words, c.status, command)
        if preset and not known:
            known = decide(c.status, words, command, diagnostic_type="", preset=preset,
                           label=label)
        if known:
            c = ReplyClass(known.reason, is_hard(known.reason, c.status), c.status)
            decision = known
        reason = "expired" if delayed and c.reason in ("onhold", "undefined") else c.reason
        if reason != c.reason:
            decision = _DELAY_NOTICE
        results.append(BounceResult(
            recipient=item.recipient or None, status=c.status, reason=reason,
            hard=is_hard(reason, c.status), diagnostic=words.strip()[:2000],
            action="delayed" if delayed else "failed",
            rule=decision.rule if decision else None,
            rule_source=decision.source if decision else None,
            evidence=decision.evidence if decision else None))
    return BounceReport(_kind(results, text), results)  # type: ignore[arg-type]
