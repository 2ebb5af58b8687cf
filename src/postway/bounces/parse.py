"""parse_bounce: one entry point from raw bytes to a BounceReport, for every format."""

from __future__ import annotations

import re
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
from postway.bounces.engines import engine_reason, report_signs
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
from postway.bounces.providers import provider_reason
from postway.domain.bounce_reasons import (
    RETRY_REASONS,
    ReplyClass,
    classify_reply,
    find_code,
    is_hard,
    matches,
    reason_for,
)

_DELAY_RE = re.compile(
    r"warning message only|has been delayed|delivery (?:is |has been )?delayed|will (?:continue"
    r" to )?(?:be )?retr(?:y|ied)|still trying|not yet been delivered|delivery status "
    r"notification \(delay\)|delayed mail|delay(?:ed)? notification", re.IGNORECASE)
_BOUNCE_SIGNAL_RE = re.compile(
    r"undeliver|could not be delivered|delivery (?:has )?failed|permanent(?:ly)? (?:error|fatal)"
    r"|returned mail|failure notice|delivery status notification|mail delivery|not delivered"
    r"|unable to deliver|was not delivered|delivery to the following|rejected|\b[45]\d\d[ -]"
    r"|\b[45]\.\d\.\d", re.IGNORECASE)
_VAGUE = ("onhold", "undefined", "systemerror", "securityerror")
# Bounds on the work per email, whatever arrives (the text read of each part and header is
# bounded in `mime`): a bounce's verdict is in its first pages, and more than a thousand
# recipients is an attack or a list explosion whose first entries tell the story.
_MAX_BYTES = 1_000_000
_MAX_RECIPIENTS = 1000


def parse_bounce(raw: bytes) -> BounceReport:
    """Parse one email. Never raises: anything unreadable is kind "none"."""
    try:
        return _parse(raw[:_MAX_BYTES])
    except Exception:  # noqa: BLE001 - a hostile email must not stop intake
        return BounceReport("none", [])


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
    if not actions - {None} and _DELAY_RE.search(text):
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
        preset = engine_reason(msg, words or nearby, status, report_text, signs)
        known = "" if preset and preset not in RETRY_REASONS else provider_reason(
            recipient, entry.remote_mta, words or nearby, status, command, reporter)
        reason = known or reason_for(status, words, command, entry.action,
                                     diagnostic_type=dtype, preset=preset)
        if reason in ("onhold", "undefined") and nearby:
            better = reason_for(status, f"{words}\n{nearby}", command, entry.action,
                                diagnostic_type=dtype, preset=preset)
            reason = better if better not in ("onhold", "undefined") else reason
        results.append(BounceResult(
            recipient=recipient, status=status, reason=reason,
            hard=is_hard(reason, status),
            diagnostic=words or nearby.strip()[:2000],
            remote_mta=entry.remote_mta, action=entry.action,
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
        reason = reason_for(None, words)
        return BounceReport("bounce", [BounceResult(
            recipient=first_address(words) or who, status="5.0.0", reason=reason,
            hard=False, diagnostic=words.strip()[:2000], action="failed")])
    return BounceReport("auto-reply", [BounceResult(
        recipient=who, status=None, reason="vacation", hard=False, action="auto-reply")])


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
        if not (_BOUNCE_SIGNAL_RE.search(subject) or _BOUNCE_SIGNAL_RE.search(text[:5000])):
            return BounceReport("none", [])
        found = [ProseRecipient(_fallback_recipient(msg) or "", text)]
    delayed = bool(_DELAY_RE.search(text))
    whole: ReplyClass | None = None  # the report's words at large, classified once
    signs = report_signs(msg, text)
    results: list[BounceResult] = []
    for item in found[:_MAX_RECIPIENTS]:
        words = item.text
        command = smtp_command(words) or literal_command(words)
        c = classify_reply(None, None, words, command, diagnostic_type="")
        if c.reason in ("onhold", "undefined") and words is not text:
            whole = whole or classify_reply(None, None, text, smtp_command(text))
            c = ReplyClass(whole.reason, whole.hard, c.status or whole.status)
        if c.reason in ("onhold", "undefined") and _is_group(item.recipient):
            # A mailing-list host refusing a post refuses the poster, i.e. the sender.
            c = ReplyClass("rejected", False, c.status)
        preset = engine_reason(msg, words, c.status, text, signs)
        known = "" if preset and preset not in RETRY_REASONS else provider_reason(
            item.recipient, None, words, c.status, command)
        if preset and not known:
            known = reason_for(c.status, words, command, diagnostic_type="", preset=preset)
        if known:
            c = ReplyClass(known, is_hard(known, c.status), c.status)
        reason = "expired" if delayed and c.reason in ("onhold", "undefined") else c.reason
        results.append(BounceResult(
            recipient=item.recipient or None, status=c.status, reason=reason,
            hard=is_hard(reason, c.status), diagnostic=words.strip()[:2000],
            action="delayed" if delayed else "failed"))
    return BounceReport(_kind(results, text), results)  # type: ignore[arg-type]
