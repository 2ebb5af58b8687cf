"""Bounce reasons (Sisimai's vocabulary), hard/soft rules and the SMTP-reply classifier.

One classifier serves both sides of delivery: an SMTP channel classifies the reply it got at
send time, the DSN parser classifies what a remote server reported later, and the two give the
same reason for the same words. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postway.domain.bounce_phrases import FAST_PHRASES
from postway.domain.bounce_rules import (
    ONHOLD,
    RECIPIENT_REFUSAL_RE,
    UNDEFINED,
    Decision,
    Facts,
    first_rule,
)

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
_STATUS_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
_CODE_RE = re.compile(r"(?<![\w.#-])([245]\d\d)(?:[ -]|$)")
_MAX_TEXT = 16_000


@dataclass(frozen=True)
class ReplyClass:
    """How one SMTP reply or DSN diagnostic classifies."""

    reason: str  # one of REASONS, e.g. "userunknown"
    hard: bool
    status: str | None  # enhanced status code like "5.1.1" (derived from reply code if absent)
    decision: Decision | None = field(default=None, compare=False)  # which rule decided


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
    if reason == "rejected" and RECIPIENT_REFUSAL_RE.search(text):
        return False  # "recipient address rejected" is about the recipient, not the sender
    pattern = FAST_PHRASES.get(reason)
    return bool(pattern and pattern.search(text))


_ADDRESS_RE = re.compile(r"<?[^\s<>()\[\]\"',;:@]{1,64}@[\w.-]{1,255}>?")


def _blank_addresses(text: str) -> str:
    """`_ADDRESS_RE.sub(" <address> ", text)`, searching only near each "@": a match holds
    one, at most 65 characters after its start, so the stretches of prose between them are
    not scanned position by position."""
    out: list[str] = []
    pos = 0
    while (at := text.find("@", pos)) >= 0:
        m = _ADDRESS_RE.search(text, max(pos, at - 65))
        if m is None:
            break
        out += (text[pos:m.start()], " <address> ")
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _normalise(text: str) -> str:
    """Lower-case, collapse whitespace and blank out addresses: a local part such as
    "userunknown@" or "no-such-user@" must not decide the reason."""
    # A reply's verdict is in its first lines; reading more only costs time on hostile input.
    text = text[:_MAX_TEXT]
    if "@" in text:  # no address without one: skip the pass
        text = _blank_addresses(text)
    # Runs of white space to one space, ends stripped (str.split and re's \s agree on what
    # white space is).
    return " ".join(text.split()).lower()


def reason_for(
    status: str | None, text: str, command: str | None = None, action: str | None = None,
    *, diagnostic_type: str | None = None, preset: str | None = None,
) -> str:
    """The reason for a failure: see `decide`."""
    return decide(status, text, command, action, diagnostic_type=diagnostic_type,
                  preset=preset).reason


def decide(
    status: str | None, text: str, command: str | None = None, action: str | None = None,
    *, diagnostic_type: str | None = None, preset: str | None = None,
    label: Decision | None = None, reply: int | None = None, explanation: str = "",
) -> Decision:
    """Decide the reason from the enhanced status, the diagnostic words and the SMTP command
    the failure answered (CONN, HELO, MAIL, RCPT, DATA or None when unknown), by the rule
    table of `bounce_rules`, and say which rule decided on what evidence.

    `preset` is a reason the sending system's own label names (`label` says which label);
    it stands unless it is one a closer look may sharpen, in which case it takes its place
    among the rules. `explanation` is the report's own human-readable text (RFC 3464 section
    2.1), given when the report concerns one recipient only.
    """
    status = status or ""
    if preset and preset not in RETRY_REASONS:
        return label or Decision(preset, "label.engine", "The sending system's own label",
                                 preset)
    act = (action or "").lower()
    if status.startswith("2") or act.startswith(("delivered", "relayed", "expanded")):
        return Decision("delivered", "report.delivered",
                        "RFC 3464 Action delivered/relayed/expanded, RFC 3463 class 2",
                        f"status {status}" if status else f"action {act}")
    low = _normalise(text)
    # "unknown" is no registered Diagnostic-Code type, so it counts as unstated.
    dtype = (diagnostic_type or "").lower()
    if dtype == "unknown":
        dtype = ""
    named = status_reason(status)
    if named:
        reply = None  # the reply code speaks only when the enhanced status says nothing
    elif reply is None:
        reply = find_code(low[:200])
    facts = Facts(status, named, low, command, act, dtype,
                  preset if preset not in (None, "onhold", "undefined") else "", reply,
                  explanation, _normalise)
    found = first_rule(facts, named)
    if found is not None:
        if label is not None and found.rule.startswith("label.") and found.reason == preset:
            return label
        return found
    return ONHOLD if low else UNDEFINED


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
    decision = decide(status, text, command, diagnostic_type=diagnostic_type, reply=code)
    reason = decision.reason
    if code is not None and 400 <= code < 500 and reason in _HARD_REASONS:
        # A temporary refusal cannot prove the address is bad.
        return ReplyClass(reason=reason, hard=False, status=status, decision=decision)
    return ReplyClass(reason=reason, hard=is_hard(reason, status), status=status,
                      decision=decision)
