"""Reasons that a sending system states in its own terms, before any wording heuristics.

Some MTAs label the failure themselves: PowerMTA's X-PowerMTA-BounceCategory header, Exchange
Online's extended status codes (5.1.10 RESOLVER.ADR.RecipientNotFound, 5.4.316 message expired),
old Exchange IMS error numbers, and fixed sentences that Lotus Domino, IMail, InterScan,
au/EZweb and fml print for one condition only. Those labels are more reliable than reading the
prose, so they decide the reason when present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from postway.bounces.mime import header
from postway.domain.bounce_rules import Decision
from postway.domain.regex_anchors import Prefiltered

# PowerMTA's bounce categories (its documented acct-file classification).
_POWERMTA: dict[str, str] = {
    "bad-mailbox": "userunknown", "bad-domain": "hostunknown", "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull", "message-expired": "expired", "no-answer-from-host":
    "expired", "routing-errors": "systemerror", "spam-related": "spamdetected",
    "virus-related": "virusdetected", "policy-related": "policyviolation",
    "relaying-issues": "norelaying", "content-related": "contenterror",
    "invalid-sender": "rejected", "bad-connection": "networkerror",
    "protocol-errors": "syntaxerror", "message-too-large": "mesgtoobig",
}

_POWERMTA_RE = re.compile(r"^X-PowerMTA-BounceCategory:[ \t]*([\w-]{1,40})",
                          re.IGNORECASE | re.MULTILINE)

# Exchange Online / Office 365 extended codes (documented NDR codes).
_MICROSOFT_CODES: dict[str, str] = {
    "5.1.10": "userunknown", "5.1.351": "userunknown", "5.1.0": "userunknown",
    "5.4.300": "expired", "5.4.316": "expired", "4.4.316": "expired", "5.4.14": "networkerror",
    "5.7.509": "authfailure", "5.7.515": "authfailure", "5.7.23": "authfailure",
    "5.7.511": "blocked", "5.7.606": "blocked", "5.7.513": "blocked", "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit", "5.3.4": "mesgtoobig", "5.4.1": "norelaying",
    "5.7.54": "norelaying", "5.7.57": "securityerror", "5.7.708": "blocked",
    "5.7.750": "blocked", "5.7.133": "rejected", "5.7.134": "rejected", "5.7.13": "suspend",
}
# 5.2.3 RESOLVER.RST.RecipSizeLimit is the recipient's administrative limit (RFC 3463 X.2.3);
# 5.7.606-5.7.649 "Access denied, banned sending IP [x.x.x.x]" is the whole documented range.
_MICROSOFT_CODES.update({f"5.7.{n}": "blocked" for n in range(606, 650)})
_MICROSOFT_SIGN_RE = re.compile(
    r"resolver\.adr\.|resolver\.rst\.|routing\.\w|diagnostic information for administrators"
    r"|generating server:|\bnamprd\d|\.prod\.outlook\.com", re.IGNORECASE)

# Fixed sentences one product prints for one condition.
_PRODUCT_SENTENCES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\(000c05a6\) unknown recipient|the recipient name is not recognized"),
     "userunknown", "Exchange 2000/2003 IMS NDR texts: (000C05A6) Unknown Recipient"),
    (re.compile(r"\(000b099c\) host unknown"), "hostunknown",
     "Exchange 2000/2003 IMS NDR texts: (000B099C) Host Unknown"),
    (re.compile(r"not listed in (?:the )?(?:domino directory|public name & address book)"),
     "userunknown", "IBM Lotus Domino delivery failure reports: user not listed in the "
     "Domino Directory"),
    (re.compile(r"^unknown user: |invalid final delivery userid", re.MULTILINE), "userunknown",
     "Ipswitch IMail Server delivery failure texts"),
    (re.compile(r"user mailbox exceeds allowed size"), "mailboxfull",
     "Ipswitch IMail Server delivery failure texts"),
    (re.compile(r"no valid recipients for this mm\b"), "userunknown",
     "Verizon MMS gateway (MMSC) error for a number with no handset"),
    (re.compile(r"please check if address is correct"), "userunknown",
     "Trend Micro InterScan MSS delivery failure text"),
    (re.compile(r"each of the following recipients was rejected by a remote mail server"),
     "filtered", "au (KDDI EZweb) reception-filter notice"),
)


# qmail-remote's own sentences (its trailer "this message has been in the queue too long" only
# says qmail stopped retrying; the sentence before it is the cause). Only for qmail's reports.
_QMAIL_SRC = "qmail-remote(8) / qmail-send bounce texts"
_QMAIL_SENTENCES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"wasn't able to establish an smtp connection"), "networkerror", _QMAIL_SRC),
    (re.compile(r"unable to contact ldap server"), "systemerror", "qmail-ldap bounce texts"),
    (re.compile(r"connected to .{1,80} but my name was rejected"), "blocked", _QMAIL_SRC),
    (re.compile(r"couldn't find any host named"), "hostunknown", _QMAIL_SRC),
    (re.compile(r"couldn't find a mail exchanger or ip address"), "notaccept", _QMAIL_SRC),
)
_QMAIL_RE = re.compile(r"this is the qmail-send program|\(qmail \d+ invoked for bounce\)",
                       re.IGNORECASE)


# The same patterns behind a cheap test for a literal each match needs (`regex_anchors`): the
# report-wide signs are read over up to 20,000 characters, where most are absent.
_POWERMTA_FAST = Prefiltered(_POWERMTA_RE)
_MICROSOFT_SIGN_FAST = Prefiltered(_MICROSOFT_SIGN_RE)
_QMAIL_FAST = Prefiltered(_QMAIL_RE)
_SENTENCES_FAST = tuple(Prefiltered(p) for p, _, _ in _PRODUCT_SENTENCES + _QMAIL_SENTENCES)

_TEXT_READ = 20_000  # characters of the report (and of a diagnostic) these labels are read in


@dataclass(frozen=True)
class ReportSigns:
    """What the report as a whole shows, read once per email rather than once per recipient
    (a report may name a thousand recipients). Each pattern above matches within one line, so
    searching the diagnostic and the report apart finds what searching them joined would."""

    powermta: str  # the category the report's text or header states, lower-cased ("" none)
    microsoft_sign: bool
    microsoft_ndr_header: bool
    qmail: bool
    sentences: tuple[bool, ...]  # per entry of _PRODUCT_SENTENCES + _QMAIL_SENTENCES


def report_signs(msg: Message, body: str) -> ReportSigns:
    """Read the report-wide signs of `msg`, whose text (outside any diagnostic) is `body`."""
    text = body[:_TEXT_READ]
    low = text.lower()
    m = _POWERMTA_FAST.search(text, low)
    category = m.group(1) if m else header(msg, "X-PowerMTA-BounceCategory")
    received = " ".join(str(v) for v in (msg.get_all("Received") or [])[:5])
    return ReportSigns(
        powermta=category.strip().lower(),
        microsoft_sign=bool(_MICROSOFT_SIGN_FAST.search(text, low)),
        microsoft_ndr_header=bool(header(msg, "X-MS-Exchange-Message-Is-Ndr")),
        qmail=bool(_QMAIL_FAST.search(text, low) or _QMAIL_FAST.search(received)
                   or "invoked for bounce" in received),
        sentences=tuple(bool(p.search(low)) for p in _SENTENCES_FAST),
    )


_POWERMTA_SRC = ("PowerMTA User's Guide: bounce categories (X-PowerMTA-BounceCategory, "
                 "acct bounceCat)")
_MICROSOFT_SRC = "Microsoft Learn: Email non-delivery reports and SMTP errors in Exchange Online"


def engine_reason(
    msg: Message, diagnostic: str, status: str | None, body: str,
    signs: ReportSigns | None = None,
) -> str:
    """The reason the sending system itself states, or "" (see `engine_decision`)."""
    found = engine_decision(msg, diagnostic, status, body, signs)
    return found.reason if found else ""


def engine_decision(
    msg: Message, diagnostic: str, status: str | None, body: str,
    signs: ReportSigns | None = None,
) -> Decision | None:
    """The reason the sending system itself states, with the label it stated it by, or None.

    `signs` are `report_signs(msg, body)`, passed in when one report is asked about many
    recipients."""
    signs = signs or report_signs(msg, body)
    diagnostic = diagnostic[:_TEXT_READ]
    low = diagnostic.lower()
    m = _POWERMTA_FAST.search(diagnostic, low)
    category = m.group(1).strip().lower() if m else signs.powermta
    if category in _POWERMTA:
        return Decision(_POWERMTA[category], "engine.powermta-category", _POWERMTA_SRC,
                        f"X-PowerMTA-BounceCategory: {category}")
    if status in _MICROSOFT_CODES and (
            _MICROSOFT_SIGN_FAST.search(diagnostic, low) or signs.microsoft_sign
            or signs.microsoft_ndr_header or _is_extended(status)):
        return Decision(_MICROSOFT_CODES[status], "engine.microsoft-ndr-code", _MICROSOFT_SRC,
                        f"status {status} in an Exchange/Microsoft 365 report")
    qmail = signs.qmail or bool(_QMAIL_FAST.search(diagnostic, low))
    sentences = _PRODUCT_SENTENCES + (_QMAIL_SENTENCES if qmail else ())
    for (pattern, reason, source), fast, in_report in zip(
            sentences, _SENTENCES_FAST, signs.sentences, strict=False):
        if in_report or fast.search(low):
            return Decision(reason, "engine.product-sentence", source, pattern.pattern[:80])
    return None


def _is_extended(status: str) -> bool:
    """Codes with a three-digit detail (5.1.351, 5.4.316) exist only in Microsoft's set."""
    return len(status.rpartition(".")[2]) >= 3 and status[1:4] != ".0."
