"""Reports that are not failures: ARF complaints, Amazon SES notifications, auto-replies."""

from __future__ import annotations

import re
from email.message import Message

from postway.bounces.dsn import returned_headers
from postway.bounces.mime import addresses, content_type, first_address, header, part_text, walk
from postway.bounces.model import BounceReport, BounceResult

_AUTO_SUBJECT_RE = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respons)|auto:|out of (?:the )?office"
    r"|vacation|abwesenheit|absence|r[ée]ponse automatique|away from)", re.IGNORECASE)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|delivery (?:status|fail|notification|report)|returned mail|failure notice"
    r"|mail delivery|non.?delivery|could not be delivered|delivery problem", re.IGNORECASE)
_DAEMON_RE = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)", re.I)
_COMPLAINT_SUBJECT_RE = re.compile(r"complaint about message|abuse report", re.I)


_ARF_SOURCE = ("RFC 5965 (Abuse Reporting Format: message/feedback-report), Microsoft JMRP, "
               "Amazon SES complaint notifications")
# A feedback report whose parts were flattened or re-wrapped still carries its fields.
_FEEDBACK_FIELD_RE = re.compile(r"^feedback-type:[ \t]*(?:abuse|fraud|virus|other|not-spam)\b",
                                re.IGNORECASE | re.MULTILINE)


def _feedback(recipients: list[str | None], evidence: str = "a feedback report") -> BounceReport:
    return BounceReport("feedback", [
        BounceResult(recipient=r, status=None, reason="feedback", hard=False, action="complaint",
                     rule="report.feedback", rule_source=_ARF_SOURCE, evidence=evidence)
        for r in recipients or [None]
    ])


def parse_arf(msg: Message) -> BounceReport | None:
    """An RFC 5965 feedback report (or Microsoft's JMRP look-alike), else None."""
    report = None
    for part in walk(msg):
        if content_type(part) == "message/feedback-report":
            report = part
            break
    is_jmrp = report is None and bool(_COMPLAINT_SUBJECT_RE.search(header(msg, "Subject")))
    flattened = False
    if report is None and not is_jmrp:
        # RFC 6650/5965: report-type=feedback-report names it even when the part is missing or
        # was re-wrapped as text; a "Feedback-Type:" field at a line start says the same.
        declared = "feedback-report" in header(msg, "Content-Type").lower()
        if not declared and not _has_feedback_field(msg):
            return None
        flattened = True
    if flattened:
        report = None
    recipients: list[str | None] = []
    if report is not None:
        text = _report_text(report)
        for name in ("original-rcpt-to", "removal-recipient"):
            for m in re.finditer(rf"^{name}:\s*(.+)$", text, re.IGNORECASE | re.MULTILINE):
                address = first_address(m.group(1))
                if address and address not in recipients:
                    recipients.append(address)
    if not recipients:
        original = returned_headers(msg)
        if original is not None:
            for name in ("X-HmXmrOriginalRecipient", "To", "Delivered-To"):
                address = first_address(header(original, name))
                if address:
                    recipients.append(address)
                    break
    return _feedback(recipients)


def _has_feedback_field(msg: Message) -> bool:
    for part in walk(msg):
        if not content_type(part).startswith("text/"):
            continue
        text = part_text(part)[:20_000]
        # A plain substring test first: almost no email has the field, and `in` is cheap.
        if "eedback-" in text.lower() and _FEEDBACK_FIELD_RE.search(text):
            return True
    return False


def _report_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(
            f"{k}: {v}" for sub in payload if isinstance(sub, Message) for k, v in sub.items()
        )
    return part_text(part)


_SES_TYPE_RE = re.compile(r'"(?:notificationType|eventType)"\s*:\s*"(\w+)"')
_SES_FIELD_RE = re.compile(
    r'"(emailAddress|action|status|diagnosticCode)"\s*:\s*"((?:[^"\\]|\\.){0,4000})"'
)


def parse_ses(msg: Message, body: str) -> BounceReport | None:
    """Amazon SES notifications (raw or wrapped in SNS JSON), read with regexes because the
    JSON is often re-wrapped by mail software and no longer valid."""
    if "amazonses" not in body.lower() and "amazonaws" not in header(msg, "From").lower():
        return None
    text = body.replace('\\"', '"')
    m = _SES_TYPE_RE.search(text)
    if not m:
        return None
    kind = m.group(1).lower()
    if kind == "complaint":
        block = _section(text, "complainedRecipients")
        return _feedback(list(addresses(block)) or [None])
    if kind == "delivery":
        block = _section(text, "recipients")
        return BounceReport("delivered", [
            BounceResult(recipient=a, status="2.0.0", reason="delivered", hard=False,
                         action="delivered") for a in addresses(block)[:50]
        ])
    if kind != "bounce":
        return None
    from postway.domain.bounce_reasons import classify_reply

    permanent = '"bounceType":"Permanent"' in text.replace(" ", "")
    results: list[BounceResult] = []
    current: dict[str, str] = {}
    for name, value in _SES_FIELD_RE.findall(_section(text, "bouncedRecipients")):
        if name == "emailAddress" and current:
            results.append(_ses_result(current, permanent, classify_reply))
            current = {}
        current[name] = value
    if current:
        results.append(_ses_result(current, permanent, classify_reply))
    return BounceReport("bounce", results) if results else None


def _ses_result(fields: dict[str, str], permanent: bool, classify) -> BounceResult:  # noqa: ANN001
    diagnostic = fields.get("diagnosticCode", "")
    diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic[:10] else diagnostic
    c = classify(None, fields.get("status") or None, diagnostic)
    d = c.decision
    return BounceResult(recipient=fields.get("emailAddress", "").lower() or None, status=c.status,
                        reason=c.reason, hard=c.hard, diagnostic=diagnostic,
                        action=fields.get("action") or ("failed" if permanent else "delayed"),
                        rule=d.rule if d else None, rule_source=d.source if d else None,
                        evidence=d.evidence if d else None)


def _section(text: str, key: str) -> str:
    """The JSON array that follows `"key":`, found by bracket matching."""
    start = text.find(f'"{key}"')
    if start < 0:
        return ""
    open_at = text.find("[", start)
    if open_at < 0:
        return ""
    depth = 0
    for i in range(open_at, min(len(text), open_at + 200_000)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return text[open_at:i + 1]
    return text[open_at:]


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 auto-replies and vacation notices (not bounces: the mailbox exists)."""
    sender = header(msg, "From")
    subject = header(msg, "Subject")
    if _DAEMON_RE.search(sender) or _BOUNCE_SUBJECT_RE.search(subject):
        return False
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond"):
        return True
    if header(msg, "Precedence").lower() == "auto_reply":
        return True
    auto = header(msg, "Auto-Submitted").lower().startswith("auto-replied")
    return auto or bool(_AUTO_SUBJECT_RE.search(subject))
