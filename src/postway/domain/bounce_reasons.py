"""Bounce reasons (Sisimai's vocabulary), hard/soft rules and the SMTP-reply classifier.

One classifier serves both sides of delivery: an SMTP channel classifies the reply it got at
send time, the DSN parser classifies what a remote server reported later, and the two give the
same reason for the same words. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postway.domain.bounce_phrases import PHRASES

REASONS: frozenset[str] = frozenset({
    "authfailure", "badreputation", "blocked", "contenterror", "delivered", "exceedlimit",
    "expired", "feedback", "filtered", "hasmoved", "hostunknown", "mailboxfull", "mailererror",
    "mesgtoobig", "networkerror", "norelaying", "notaccept", "notcompliantrfc", "onhold",
    "policyviolation", "ratelimited", "rejected", "requireptr", "securityerror", "spamdetected",
    "speeding", "suspend", "syntaxerror", "systemerror", "systemfull", "toomanyconn",
    "undefined", "userunknown", "vacation", "virusdetected",
})

# Hard: the address itself is wrong, so retrying can never succeed. Everything else
# (policy, content, capacity, reputation) may pass another day and is soft.
_HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

# Enhanced status codes (RFC 3463, RFC 7505, RFC 7372 and the IANA registry) that name one
# reason on their own. Generic codes (X.0.0, 4.3.0, 4.4.0, 4.5.0, 4.7.0, 5.5.0, ...) are absent:
# only the words can tell what they mean. A temporary code differs from the permanent one where
# the condition may lift (4.2.1 is a refusal for now, 4.4.4 a route missing for now).
_CODES: dict[str, tuple[str, ...]] = {
    "userunknown": ("5.1.0", "5.1.1", "5.1.3"),
    "hostunknown": ("5.1.2", "5.4.4"),
    "hasmoved": ("4.1.6", "5.1.6", "5.7.17", "5.7.18"),
    "rejected": ("4.1.7", "4.1.8", "5.1.7", "5.1.8"),
    "systemerror": ("4.1.9", "5.1.9", "4.3.3", "4.3.5", "5.3.0", "5.3.3", "5.3.5", "4.4.3",
                    "5.4.3", "4.5.3", "4.5.5", "5.5.4", "5.5.5"),
    "notaccept": ("5.1.10", "4.3.2", "5.3.2", "5.7.27"),
    "blocked": ("4.2.1", "4.7.1", "4.7.2"),
    "filtered": ("5.1.4", "4.2.4", "5.2.0", "5.2.1", "5.2.4"),
    "mailboxfull": ("4.2.2", "5.2.2"),
    "exceedlimit": ("4.2.3", "5.2.3"),
    "systemfull": ("4.3.1", "5.3.1", "4.4.5"),
    "mesgtoobig": ("5.3.4", "4.7.16", "5.7.16"),
    "expired": ("4.4.1", "4.4.7"),
    "networkerror": ("4.4.2", "4.4.4", "4.4.6", "4.4.8", "5.4.0"),
    "syntaxerror": ("5.5.2", "5.5.6"),
    "toomanyconn": ("5.5.3",),
    "contenterror": ("4.6.0", "4.6.2", "4.6.5", "5.6.0", "5.6.1", "5.6.2", "5.6.3", "5.6.5",
                     "5.6.6", "5.6.7", "5.6.8", "5.6.9"),
    "securityerror": ("4.7.5", "4.7.6", "4.7.7", "4.7.12", "4.7.15", "5.7.0", "5.7.1",
                      "5.7.2", "5.7.3", "5.7.4", "5.7.5", "5.7.6", "5.7.7", "5.7.8", "5.7.9",
                      "5.7.10", "5.7.11", "5.7.14", "5.7.15", "5.7.19"),
    "suspend": ("5.7.13",),
    "authfailure": ("4.7.24", "4.7.26", "5.7.20", "5.7.21", "5.7.22", "5.7.23", "5.7.24",
                    "5.7.26", "5.7.29"),
    "requireptr": ("4.7.25", "5.7.25"),
    "spamdetected": ("5.7.28",),
}
_STATUS_NAMES: dict[str, str] = {code: r for r, codes in _CODES.items() for code in codes}

# The reference classifier's stand-in codes (X.0.9NN) for a reason with no real status.
PSEUDO_CODES: dict[str, int] = {
    "undefined": 900, "onhold": 901, "syntaxerror": 902, "norelaying": 909, "filtered": 910,
    "userunknown": 911, "hostunknown": 912, "hasmoved": 916, "rejected": 918, "suspend": 921,
    "mailboxfull": 922, "exceedlimit": 923, "authfailure": 926, "systemerror": 930,
    "systemfull": 931, "notaccept": 932, "mesgtoobig": 934, "mailererror": 939,
    "toomanyconn": 945, "speeding": 946, "expired": 947, "networkerror": 944,
    "contenterror": 960, "securityerror": 970, "blocked": 971, "policyviolation": 972,
    "requireptr": 973, "notcompliantrfc": 974, "badreputation": 975, "spamdetected": 980,
    "virusdetected": 981,
}
_PSEUDO_BY_CODE = {str(v): k for k, v in PSEUDO_CODES.items()}

# Reasons a later, better-informed look may overturn (the words may say something sharper).
RETRY_REASONS = frozenset({"", "undefined", "onhold", "systemerror", "securityerror",
                           "networkerror", "hostunknown", "userunknown"})
# First pass: each reason decided by its status code or its words, in this order (specific
# account and capacity words before address words, address words before the refusal causes).
_FIRST_PASS = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying",
    "authfailure", "userunknown", "filtered", "requireptr", "notcompliantrfc", "badreputation",
    "contenterror", "rejected", "hostunknown", "spamdetected", "speeding", "toomanyconn",
    "blocked",
)
# Second pass, by words only, when the status named nothing (or something vague).
_SECOND_PASS = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected",
    "policyviolation", "norelaying", "systemerror", "networkerror", "suspend", "contenterror",
    "systemfull", "notaccept", "expired", "securityerror", "mailererror",
)
# Commands sent before DATA: a refusal there cannot be about the message's content.
_BEFORE_DATA = frozenset({"CONN", "HELO", "EHLO", "MAIL", "RCPT"})
# Words that, next to a 5.1.1, mean the server misused the code for something else.
USER_UNKNOWN_SOFT_CONTEXT = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected",
                             "notaccept")

_STATUS_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
_CODE_RE = re.compile(r"(?<![\w.#-])([245]\d\d)(?:[ -]|$)")
_SPACE_RE = re.compile(r"\s+")
_MAX_TEXT = 16_000


@dataclass(frozen=True)
class ReplyClass:
    """How one SMTP reply or DSN diagnostic classifies."""

    reason: str  # one of REASONS, e.g. "userunknown"
    hard: bool
    status: str | None  # enhanced status code like "5.1.1" (derived from reply code if absent)


def is_hard(reason: str, status: str | None = None) -> bool:
    """Hard bounces are permanent address failures; a "does not accept mail" host is hard
    only when the failure was permanent (a 4xx refusal may lift)."""
    if reason == "notaccept":
        return not (status or "").startswith("4")
    return reason in _HARD_REASONS


def find_status(text: str) -> str | None:
    """The first specific enhanced status code (e.g. "5.7.1") in `text`, skipping IP
    addresses; a generic X.0.0 or 4.4.7 counts only when nothing more specific is there."""
    generic = success = None
    for m in _STATUS_RE.finditer(text):
        if int(m.group(2)) > 7:
            continue
        found = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
        if found[0] == "2":
            success = success or found  # a transcript's "250 2.1.0 Ok" is not the verdict
        elif found[1:] == ".0.0" or found == "4.4.7":
            generic = generic or found
        else:
            return found
    return generic or success


def find_code(text: str) -> int | None:
    """The first SMTP reply code (e.g. 550) in `text`."""
    m = _CODE_RE.search(text)
    return int(m.group(1)) if m else None


def status_reason(status: str | None) -> str:
    """The reason an enhanced status code names by itself, or "" when it is generic.

    A reference-style pseudo code (X.0.9NN) names the reason it stands for."""
    if not status:
        return ""
    if status[0] == "2":
        return "delivered"
    if status[1:5] == ".0.9":
        return _PSEUDO_BY_CODE.get(status[4:], "")
    return _STATUS_NAMES.get(status, "")


def pseudo_status(reason: str, temporary: bool = False) -> str | None:
    """The reference classifier's stand-in status for a reason with no real code."""
    number = PSEUDO_CODES.get(reason)
    if number is None or (temporary and reason in _HARD_REASONS):
        return None
    return f"{4 if temporary else 5}.0.{number}"


def matches(reason: str, text: str) -> bool:
    """Whether `text` (lower-cased, whitespace-collapsed) uses the wording of `reason`."""
    if reason == "rejected" and _RECIPIENT_REFUSAL_RE.search(text):
        return False  # "recipient address rejected" is about the recipient, not the sender
    pattern = PHRASES.get(reason)
    return bool(pattern and pattern.search(text))


_ADDRESS_RE = re.compile(r"<?[^\s<>()\[\]\"',;:@]{1,64}@[\w.-]{1,255}>?")


def _normalise(text: str) -> str:
    """Lower-case, collapse whitespace and blank out addresses: a local part such as
    "userunknown@" or "no-such-user@" must not decide the reason."""
    # A reply's verdict is in its first lines; reading more only costs time on hostile input.
    text = text[:_MAX_TEXT]
    return _SPACE_RE.sub(" ", _ADDRESS_RE.sub(" <address> ", text)).strip().lower()


def _first_pass(reason: str, named: str, low: str, command: str | None, status: str) -> bool:
    """Whether `reason` holds, judged by the status code's name and the words together."""
    if reason == "userunknown":
        if named == "userunknown":
            # "5.1.1 ... relaying denied" or "5.1.1 mailbox full": the code was misused.
            return not any(matches(r, low) for r in USER_UNKNOWN_SOFT_CONTEXT)
        return command == "RCPT" and matches("userunknown", low)
    if reason == "filtered":
        if named == "filtered":
            return matches("userunknown", low) or matches("filtered", low)
        # A refusal before DATA cannot be a filter on what the message says.
        if command in _BEFORE_DATA:
            return False
        return matches("filtered", low) or matches("userunknown", low)
    if reason == "rejected":
        if named == "rejected":
            return True
        if command == "MAIL" and "access denied" in low:
            return True  # refused at MAIL FROM: the sender is what was denied
        if command == "MAIL" or (command == "DATA" and named != "userunknown") or named in (
                "", "securityerror", "systemerror"):
            return matches("rejected", low)
        return False
    if reason == "hostunknown":
        if named == "hostunknown":
            # 5.4.4 "unable to route" is also what a null-MX domain and a DNS failure get.
            return not (matches("networkerror", low) or matches("notaccept", low))
        return matches("hostunknown", low)
    if reason == "spamdetected":
        if named == "spamdetected":
            return True
        return bool(status) and command not in _BEFORE_DATA and matches("spamdetected", low)
    if reason == "contenterror":
        if _first_pass("spamdetected", named, low, command, status):
            return False
        return named == "contenterror" or matches("contenterror", low)
    if reason == "norelaying":
        return command not in ("CONN", "HELO", "EHLO") and matches("norelaying", low)
    if reason == "mesgtoobig":
        return named == "mesgtoobig" or (named != "exceedlimit" and matches("mesgtoobig", low))
    if reason in ("suspend", "hasmoved", "notcompliantrfc"):
        return matches(reason, low)
    return named == reason or matches(reason, low)


_RECIPIENT_REFUSAL_RE = re.compile(
    r"recipient address rejected|5\.1\.0 address rejected|sender ip address rejected")


def reason_for(
    status: str | None, text: str, command: str | None = None, action: str | None = None,
    *, diagnostic_type: str | None = None, preset: str | None = None,
) -> str:
    """Decide the reason from the enhanced status, the diagnostic words and the SMTP command
    the failure answered (CONN, HELO, MAIL, RCPT, DATA or None when unknown).

    `preset` is a reason a format-specific parser already knows (its own error code said
    so); it stands unless it is one a closer look may sharpen. Then, as the reference
    classifier does: a first pass asks each reason in turn whether the status code or the
    words point to it (capacity and account words before address words, the command deciding
    what "unknown user" means); failing that, the words alone are tried for the causes only a
    text can carry; then the status code's own name, the action, and the command.
    """
    status = status or ""
    if preset and preset not in RETRY_REASONS:
        return preset
    if status.startswith("2") or (action or "").startswith(("delivered", "relayed",
                                                             "expanded")):
        return "delivered"
    low = _normalise(text)
    named = status_reason(status)
    # "" (unstated) is read like an SMTP reply in the first pass, but the words are then
    # tried again in the second; "unknown" is no registered type, so it counts as unstated.
    dtype = (diagnostic_type or "").lower()
    if dtype == "unknown":
        dtype = ""
    if dtype in ("smtp", ""):
        for reason in _FIRST_PASS:
            if reason == preset or _first_pass(reason, named, low, command, status):
                return reason
    found = _second_pass(named, low, command, action, dtype, status, preset or "")
    if found:
        return found
    if (action or "").startswith("delayed"):
        return "expired"
    if matches("vacation", low):
        return "vacation"
    return "onhold" if low else "undefined"


def _second_pass(named: str, low: str, command: str | None, action: str | None, dtype: str,
                 status: str, preset: str) -> str:
    if preset and preset not in ("onhold", "undefined"):
        return preset
    if named not in RETRY_REASONS and dtype == "smtp":
        return named
    for reason in _SECOND_PASS:
        if matches(reason, low):
            return reason
    if named:
        return named
    if status[1:4] == ".6.":
        return "contenterror"
    if status[1:4] == ".7.":
        return "securityerror"
    if dtype.startswith("x-unix"):
        return "mailererror"
    if status in ("5.5.2", "5.5.6") or matches("syntaxerror", low):
        return "syntaxerror"
    if (action or "").startswith(("delayed", "expired")):
        return "expired"
    if command in ("HELO", "EHLO"):
        return "blocked"
    return ""


def derive_status(code: int | None, status: str | None, text: str) -> str | None:
    """The enhanced status: given, else found in the text, else the reply code's class."""
    if status:
        return status
    found = find_status(text)
    if found:
        return found
    code = code or find_code(text)
    if code and 200 <= code < 600:
        return f"{code // 100}.0.0"
    return None


def classify_reply(
    code: int | None, status: str | None, text: str, command: str | None = None,
    *, diagnostic_type: str | None = "smtp",
) -> ReplyClass:
    """Classify an SMTP reply (`code`, enhanced `status`, reply `text`), as met at send time
    or quoted in a DSN. `command` is the SMTP verb the reply answered, when known.

    Invariant: never raises; the reason is always one of REASONS.
    """
    text = text or ""
    status = derive_status(code, status, text)
    reason = reason_for(status, text, command, diagnostic_type=diagnostic_type)
    if code is not None and 400 <= code < 500 and reason in _HARD_REASONS:
        # A temporary refusal cannot prove the address is bad.
        return ReplyClass(reason=reason, hard=False, status=status)
    return ReplyClass(reason=reason, hard=is_hard(reason, status), status=status)
