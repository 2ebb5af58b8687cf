"""The bounce-reason decision as a table of rules, each with its priority and its source.

A rule names what it looks at (the enhanced status code, the SMTP reply code, the command the
failure answered, the diagnostic's words, a label the sending system put on the failure), the
reason it yields, and the published document it rests on. `decide` tries the rules by priority
(lowest number first) and the first that holds decides; `onhold` is left for a report in which
nothing decides. Hard or soft follows from the reason (`bounce_reasons.is_hard`).

The backbone is RFC 3463 / RFC 5248 and the IANA "SMTP Enhanced Status Codes" registry; the
words come from the MTAs' documented texts and the providers' published reply-code pages (see
`bounce_phrases`). The order within the first band (capacity and account words before address
words, address words before the causes of a refusal, the command deciding what "unknown user"
means) follows how a reply is read: the most specific statement wins. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from postway.domain.bounce_phrases import FAST_PHRASES

# Commands sent before DATA: a refusal there cannot be about the message's content.
BEFORE_DATA = frozenset({"CONN", "HELO", "EHLO", "MAIL", "RCPT"})
_GREETING = frozenset({"CONN", "HELO", "EHLO"})
RECIPIENT_REFUSAL_RE = re.compile(
    r"recipient address rejected|5\.1\.0 address rejected|sender ip address rejected")

RFC3463 = "RFC 3463 (Enhanced Mail System Status Codes)"
IANA = "IANA SMTP Enhanced Status Codes registry"
RFC5321 = "RFC 5321 section 4.2 (SMTP replies)"


@dataclass(frozen=True)
class Decision:
    """Which rule decided a reason, on what evidence (a status code or the words matched)."""

    reason: str
    rule: str
    source: str
    evidence: str


@dataclass(frozen=True)
class Rule:
    """One declarative rule. Every condition given must hold; an empty one is not asked.

    codes:       enhanced status patterns ("5.1.1", "X.1.1" for either class, "X.7.*")
    named:       the status code's registry name is one of these ("" = generic or none)
    replies:     SMTP reply codes, asked only when the enhanced status is generic or absent
    words:       keys of `bounce_phrases.PHRASES`, one must match the diagnostic
    also:        keys of PHRASES that must all match as well
    unless:      keys of PHRASES, none may match
    commands:    the failure answered one of these (None stands for "not stated")
    not_commands: the failure did not answer one of these
    smtp:        only for an SMTP diagnostic (Diagnostic-Code type smtp, or unstated)
    dtype:       the Diagnostic-Code type starts with this ("x-unix")
    actions:     the DSN action starts with one of these
    label:       the sending system's own label names this reason (`engines`, `providers`)
    explained:   keys of PHRASES, one must match the report's own explanation (RFC 3464
                 section 2.1, the human-readable part), given only for a one-recipient report
    reason "":   the reason is the one the status code names (or the label)
    """

    id: str
    priority: int
    reason: str
    source: str
    codes: tuple[str, ...] = ()
    named: tuple[str, ...] = ()
    replies: tuple[int, ...] = ()
    words: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    commands: frozenset[str | None] | None = None
    not_commands: frozenset[str] = frozenset()
    smtp: bool = False
    dtype: str = ""
    actions: tuple[str, ...] = ()
    label: bool = False
    explained: tuple[str, ...] = ()


class Facts:
    """What one diagnostic says, with each word list searched at most once."""

    __slots__ = ("status", "named", "low", "command", "action", "dtype", "label", "reply",
                 "_explanation", "_normalise", "_hits")

    def __init__(self, status: str, named: str, low: str, command: str | None, action: str,
                 dtype: str, label: str, reply: int | None, explanation: str = "",
                 normalise: Callable[[str], str] | None = None) -> None:
        self.status, self.named, self.low, self.command = status, named, low, command
        self.action, self.dtype, self.label, self.reply = action, dtype, label, reply
        # The report's explanation, normalised like `low` by `normalise` when a rule first
        # asks for it (most decisions never do, and it may be a whole report).
        self._explanation, self._normalise = explanation, normalise
        self._hits: dict[str, re.Match[str] | None] = {}

    @property
    def explanation(self) -> str:
        """The report's explanation, normalised like `low` ("" when not given)."""
        if self._normalise is not None:
            self._explanation = self._normalise(self._explanation) if self._explanation else ""
            self._normalise = None
        return self._explanation

    def words(self, key: str) -> re.Match[str] | None:
        if key in self._hits:
            return self._hits[key]
        pattern = FAST_PHRASES.get(key)
        found = pattern.search(self.low) if pattern is not None else None
        if key == "rejected" and found and RECIPIENT_REFUSAL_RE.search(self.low):
            found = None  # "recipient address rejected" is about the recipient, not the sender
        self._hits[key] = found
        return found


def _code_set(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Status patterns as exact codes and prefixes ("X.1.1" is 4.1.1 and 5.1.1; "X.7.*" is
    every 4.7.x and 5.7.x), so that a rule asks a set and a tuple, not a loop."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        for p in ((f"4{pattern[1:]}", f"5{pattern[1:]}") if pattern[0] == "X" else (pattern,)):
            if p.endswith(".*"):
                prefixes.append(p[:-1])
            else:
                exact.add(p)
    return frozenset(exact), tuple(prefixes)


def _snippet(low: str, m: re.Match[str]) -> str:
    start = max(0, m.start() - 30)
    end = min(len(low), m.end() + 30)
    return ("..." if start else "") + low[start:end] + ("..." if end < len(low) else "")


def holds(rule: Rule, f: Facts) -> str | None:
    """The evidence on which `rule` holds for `f`, or None when it does not."""
    if rule.smtp and f.dtype not in ("smtp", ""):
        return None
    if rule.dtype and not f.dtype.startswith(rule.dtype):
        return None
    if rule.commands is not None and f.command not in rule.commands:
        return None
    if f.command in rule.not_commands:
        return None
    if rule.actions and not f.action.startswith(rule.actions):
        return None
    if rule.explained and not f.explanation:
        return None
    evidence: list[str] = []
    if rule.label:
        if not f.label or (rule.reason and f.label != rule.reason):
            return None
        evidence.append(f"the sending system's label: {f.label}")
    if rule.codes:
        exact, prefixes = _CODE_SETS[rule.id]
        if f.status not in exact and not (prefixes and f.status.startswith(prefixes)):
            return None
        evidence.append(f"status {f.status}")
    if rule.named:
        if f.named not in rule.named:
            return None
        if not rule.codes and f.named:
            evidence.append(f"status {f.status} ({f.named})")
    if rule.replies:
        if f.reply not in rule.replies or f.named:
            return None
        evidence.append(f"reply code {f.reply}")
    if rule.words:
        m = next((m for k in rule.words if (m := f.words(k)) is not None), None)
        if m is None:
            return None
        evidence.append(f'"{_snippet(f.low, m)}"')
    for key in rule.also:
        m = f.words(key)
        if m is None:
            return None
        evidence.append(f'"{_snippet(f.low, m)}"')
    if any(f.words(k) for k in rule.unless):
        return None
    if rule.explained:
        m = next((m for k in rule.explained if (p := FAST_PHRASES.get(k)) is not None
                  and (m := p.search(f.explanation))), None)
        if m is None:
            return None
        evidence.append(f'the report\'s explanation: "{_snippet(f.explanation, m)}"')
    if not evidence:
        if f.command and rule.commands is not None:
            evidence.append(f"command {f.command}")
        if f.action and rule.actions:
            evidence.append(f"action {f.action}")
    return "; ".join(evidence) or "(nothing else decided)"


def _rule(id: str, priority: int, reason: str, source: str, **kw: object) -> Rule:  # noqa: A002
    return Rule(id, priority, reason, source, **kw)  # type: ignore[arg-type]


_SOFT_CONTEXT = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept")

# Band 2's word lists, in the order they are tried, and the documents they come from.
_WORD_SOURCES: dict[str, str] = {
    "mailboxfull": "Postfix/Exim/Sendmail/Dovecot quota texts; Google 552 5.2.2 'mailbox full'",
    "authfailure": "Google SMTP error reference 5.7.26/5.7.27 (SPF, DKIM, DMARC); Microsoft "
                   "5.7.509/5.7.515",
    "badreputation": "Google 421 4.7.0 / 550 5.7.1 'IP reputation'; Microsoft 'rate limited "
                     "due to IP reputation'",
    "speeding": "Google 421 4.7.28 'unusual rate'; Yahoo 421 4.7.0 [TS0x]; Postfix 'too many "
                "messages'",
    "spamdetected": "SpamAssassin/Amavis/Barracuda texts; Google 550 5.7.1 'likely "
                    "unsolicited mail'",
    "virusdetected": "ClamAV/Amavis/Exim malware texts",
    "policyviolation": "Exim/Postfix/Microsoft policy texts ('rejected for policy reasons')",
    "norelaying": "Postfix 'Relay access denied'; Sendmail 'Relaying denied'",
    "systemerror": "Sendmail/Exim local error texts ('local error in processing', mail loops); "
                   "RFC 5321 451",
    "networkerror": "Postfix DNS error texts ('Malformed or unexpected name server reply'); "
                    "RFC 5321 section 6.3 loops ('too many hops')",
    "suspend": "Providers' disabled-account texts (Google 5.2.1, Yahoo, Orange)",
    "contenterror": "Exim/Postfix MIME and header texts",
    "systemfull": "RFC 5321 452 'insufficient system storage'",
    "notaccept": "RFC 7505 null MX texts ('does not accept mail')",
    "expired": "Postfix/Exim/Sendmail give-up texts ('retry timeout exceeded', 'could not be "
               "delivered for N days', 'message expired')",
    "securityerror": "RFC 4954 authentication texts",
    "mailererror": "Postfix/Sendmail local delivery texts (pipe, procmail, X-Unix)",
}

# Band 1 (priorities 100-1999): SMTP diagnostics, status code and words read together.
# Band 2 (2000-2999): the words alone, for causes only a text carries (any diagnostic type).
# Band 3 (3000-3999): what the codes and the delivery report say when no words decided.
RULES: tuple[Rule, ...] = (
    # --- account and capacity ---------------------------------------------------------------
    _rule("status.mailbox-full", 100, "mailboxfull",
          f"{RFC3463} X.2.2 Mailbox full", codes=("X.2.2",), smtp=True),
    _rule("words.mailbox-full", 110, "mailboxfull",
          "Postfix/Exim/Sendmail/Dovecot quota texts; Google SMTP error reference 552 5.2.2",
          words=("mailboxfull",), smtp=True),
    _rule("status.exceed-limit", 150, "exceedlimit",
          f"{RFC3463} X.2.3 Message length exceeds administrative limit", codes=("X.2.3",),
          smtp=True),
    _rule("words.exceed-limit", 160, "exceedlimit",
          "RFC 3463 X.2.3 wording; Sendmail/Exim recipient and header limits",
          words=("exceedlimit",), smtp=True),
    _rule("status.message-too-big", 200, "mesgtoobig",
          f"{RFC3463} X.3.4 Message too big for system; {IANA} X.7.16 (RFC 6710)",
          codes=("X.3.4", "X.7.16"), smtp=True),
    _rule("words.message-too-big", 210, "mesgtoobig",
          "Postfix 'message size exceeds fixed maximum message size'; Exchange 5.3.4; "
          "Google 552 5.3.4", words=("mesgtoobig",), smtp=True),
    _rule("words.suspended", 300, "suspend",
          "Providers' texts for disabled or suspended accounts (Google 5.2.1, Yahoo, Orange)",
          words=("suspend",), smtp=True),
    _rule("status.has-moved", 390, "hasmoved",
          f"{RFC3463} X.1.6 Destination mailbox has moved, no forwarding address; {IANA} "
          "X.7.17/X.7.18 mailbox or domain owner has changed (RFC 7293)",
          codes=("X.1.6", "5.7.17", "5.7.18"), smtp=True),
    _rule("words.has-moved", 400, "hasmoved",
          "Sendmail 'User has moved; please try <new address>' (RFC 5321 551)",
          words=("hasmoved",), smtp=True),
    _rule("words.no-relaying", 500, "norelaying",
          "Postfix 'Relay access denied'; Sendmail 'Relaying denied'; qmail rcpthosts",
          words=("norelaying",), not_commands=_GREETING, smtp=True),
    _rule("status.auth-failure", 600, "authfailure",
          f"{IANA} X.7.20-X.7.26, X.7.29 (RFC 7372, RFC 8689: DKIM/SPF/DMARC)",
          codes=("4.7.24", "4.7.26", "X.7.20", "X.7.21", "X.7.22", "X.7.23", "X.7.24",
                 "X.7.26", "X.7.29"), smtp=True),
    _rule("words.auth-failure", 610, "authfailure",
          "Google 550 5.7.26 DMARC/SPF texts; Microsoft 5.7.509/5.7.515; Yahoo 'requires all "
          "senders to authenticate'", words=("authfailure",), smtp=True),
    _rule("words.security-required", 650, "securityerror",
          "RFC 4954 530 5.7.0 'Authentication required'; RFC 3207 530 'Must issue a STARTTLS "
          "command first'; RFC 3463 X.7.10/X.7.11 encryption required",
          words=("authrequired",), smtp=True),
    # A catch-all "user unknown" reply sharpened by the report's own explanation: many MTAs
    # answer 550 "User unknown" for a mailbox that exists but cannot receive (au/KDDI states
    # that a mailbox that cannot receive may be answered by an NDR rather than a 550 at RCPT),
    # while the reporting MTA's human-readable part (RFC 3464 section 2.1) names the state.
    _rule("explained.mailbox-full", 680, "mailboxfull",
          "RFC 3464 section 2.1 (the report's human-readable explanation) naming a full "
          "mailbox (RFC 3463 X.2.2, Postfix/Sendmail/Dovecot quota texts) where the remote's "
          "reply is only 'user unknown'", words=("userunknown",), explained=("mailboxfull",),
          smtp=True),
    _rule("explained.suspended", 690, "suspend",
          "RFC 3464 section 2.1 (the report's human-readable explanation) naming a disabled "
          "account (RFC 3463 X.2.1 'Mailbox disabled'; au/KDDI 'The user(s) account is "
          "disabled', au.com sending specification) where the reply is only 'user unknown'",
          words=("userunknown",), explained=("suspend",), smtp=True),
    # --- the address --------------------------------------------------------------------------
    _rule("status.bad-mailbox", 700, "userunknown",
          f"{RFC3463} X.1.1 Bad destination mailbox address, X.1.0, X.1.3 bad syntax "
          "(unless the words show the code was reused for a refusal)",
          codes=("5.1.0", "5.1.1", "5.1.3", "4.1.1"), unless=_SOFT_CONTEXT, smtp=True),
    # After status.filtered: a reporting MTA's category (PowerMTA's bad-mailbox is its own
    # pattern match of the remote reply) is a second reading of the same words, so a status
    # the remote server gave that says the mailbox exists (RFC 3463 X.2.x) outranks it.
    _rule("label.user-unknown", 801, "userunknown",
          "The sending system's own label (Exchange RESOLVER.ADR.RecipientNotFound 5.1.10, "
          "PowerMTA bad-mailbox)", label=True, smtp=True),
    _rule("words.user-unknown-at-rcpt", 710, "userunknown",
          "RFC 5321 550 at RCPT 'mailbox unavailable' with the MTAs' unknown-user texts "
          "(Postfix 'User unknown in local recipient table', Sendmail 'User unknown', qmail "
          "'no mailbox here by that name', Exchange 'Recipient not found by SMTP address "
          "lookup', Google 550 5.1.1 'account ... does not exist')",
          words=("userunknown",), commands=frozenset({"RCPT"}), smtp=True),
    _rule("words.user-unknown-quoting-recipient", 805, "userunknown",
          "Sendmail ('550 5.1.1 <addr>... User unknown') and Postfix smtpd ('550 <addr>: "
          "...') quote the recipient when refusing RCPT TO, so such a reply is an RCPT answer "
          "(RFC 5321 section 4.2.3, 550 mailbox unavailable)",
          words=("userunknown",), also=("rcptquote",), unless=("filtered",), smtp=True,
          not_commands=frozenset({"CONN", "HELO", "EHLO", "MAIL", "DATA"})),
    _rule("status.filtered", 800, "filtered",
          f"{RFC3463} X.2.0/X.2.1/X.2.4 mailbox refuses, with address or filter words",
          codes=("5.1.4", "4.2.4", "5.2.0", "5.2.1", "5.2.4"),
          words=("userunknown", "filtered"), smtp=True),
    _rule("words.filtered-after-data", 810, "filtered",
          "A recipient refused after DATA (or where no command is named, so not before "
          "it) is refused by a recipient-side filter, not for a missing mailbox: RFC 5321 "
          "recipients are checked at RCPT (Sisimai's 'filtered'; au/docomo reception "
          "settings)", words=("filtered", "userunknown"), not_commands=BEFORE_DATA, smtp=True),
    _rule("status.require-ptr", 900, "requireptr",
          f"{IANA} X.7.25 Reverse DNS validation failed (RFC 7372)", codes=("X.7.25",),
          smtp=True),
    _rule("words.require-ptr", 910, "requireptr",
          "Google 550 5.7.25 'PTR record'; Postfix reject_unknown_client_hostname; Cox "
          "CXDNS; Spectrum 1100-1150", words=("requireptr",), smtp=True),
    _rule("words.not-rfc-compliant", 1000, "notcompliantrfc",
          "Google 550 5.7.1 'not RFC 5322 compliant'; Yahoo 554 'headers are not RFC "
          "compliant'", words=("notcompliantrfc",), smtp=True),
    _rule("words.bad-reputation", 1100, "badreputation",
          "Google 421/550 'IP reputation'; Microsoft 'rate limited due to IP reputation'",
          words=("badreputation",), smtp=True),
    _rule("status.content", 1200, "contenterror",
          f"{RFC3463} X.6.x Message content or media errors", codes=("X.6.*",),
          unless=("spamdetected",), smtp=True),
    _rule("words.content", 1210, "contenterror",
          "Exim/Postfix header and MIME texts", words=("contenterror",),
          unless=("spamdetected",), smtp=True),
    _rule("status.sender-refused", 1300, "rejected",
          f"{RFC3463} X.1.7 Bad sender's mailbox syntax, X.1.8 Bad sender's system address",
          codes=("X.1.7", "X.1.8"), smtp=True),
    _rule("words.access-denied-at-mail", 1310, "rejected",
          "RFC 5321 550 at MAIL FROM: the sender was refused (Postfix access(5) 'Access "
          "denied')", words=("accessdenied",), commands=frozenset({"MAIL"}), smtp=True),
    _rule("words.sender-refused-at-mail", 1320, "rejected",
          "Sender refusals at MAIL FROM (Postfix 'Sender address rejected', Sendmail "
          "'Domain of sender address does not exist')", words=("rejected",),
          commands=frozenset({"MAIL"}), smtp=True),
    _rule("words.sender-refused", 1330, "rejected",
          "Sender refusal texts where the status names nothing specific",
          words=("rejected",), named=("", "securityerror", "systemerror"), smtp=True),
    _rule("words.sender-refused-after-data", 1340, "rejected",
          "Sender refusal texts after DATA", words=("rejected",),
          commands=frozenset({"DATA"}), unless=("userunknown",), smtp=True),
    _rule("status.host-unknown", 1400, "hostunknown",
          f"{RFC3463} X.1.2 Bad destination system address, X.4.4 Unable to route "
          "(unless the words name a DNS failure or a null MX)",
          codes=("X.1.2", "5.4.4"), unless=("networkerror", "notaccept"), smtp=True),
    _rule("label.host-unknown", 1405, "hostunknown",
          "The sending system's own label (PowerMTA bad-domain, Exchange IMS host unknown)",
          label=True, smtp=True),
    _rule("words.host-unknown", 1410, "hostunknown",
          "Postfix 'Host or domain name not found'; Exim 'Unrouteable address'; qmail "
          "'Sorry, I couldn't find any host named'", words=("hostunknown",), smtp=True),
    _rule("status.spam", 1500, "spamdetected",
          f"{IANA} X.7.28 Mail flood detected (RFC 8689 era spam class)", codes=("X.7.28",),
          smtp=True),
    _rule("words.spam", 1510, "spamdetected",
          "Google 550 5.7.1 'likely unsolicited mail'; SpamAssassin/Amavis/Barracuda texts; "
          "Yahoo 554 5.7.9", words=("spamdetected",), not_commands=_GREETING, smtp=True),
    _rule("words.speeding-smtp", 1600, "speeding",
          "Google 421 4.7.28 / Yahoo 421 4.7.0 [TS01] 'rate limited'", words=("speeding",),
          smtp=True),
    _rule("status.too-many-recipients", 1700, "toomanyconn",
          f"{RFC3463} X.5.3 Too many recipients", codes=("5.5.3",), smtp=True),
    _rule("words.too-many-connections", 1710, "toomanyconn",
          "Postfix 421 'Too many connections'; Exim 'Too many concurrent SMTP connections'",
          words=("toomanyconn",), smtp=True),
    _rule("status.blocked", 1800, "blocked",
          f"{RFC3463} X.7.1 Delivery not authorized, message refused (temporary: a "
          "refusal for now), X.2.1 mailbox disabled for now",
          codes=("4.2.1", "4.7.1", "4.7.2"), smtp=True),
    _rule("words.blocked", 1810, "blocked",
          "Spamhaus/Spamcop/Barracuda DNSBL texts; Microsoft 5.7.606-649 banned sending IP; "
          "Yahoo 553 5.7.1 [BL21]; Cox CXBL; Postfix 'Client host rejected'",
          words=("blocked",), smtp=True),
    # --- band 2: the words alone ----------------------------------------------------------------
    _rule("label.engine", 2000, "",
          "The sending system's own label for the failure (PowerMTA bounce category, "
          "Exchange NDR code, provider code)", label=True),
    _rule("status.named-smtp", 2010, "",
          f"{RFC3463} and the {IANA}: the code's registered meaning",
          named=tuple(sorted({"rejected", "notaccept", "blocked", "filtered", "mailboxfull",
                              "exceedlimit", "systemfull", "mesgtoobig", "expired",
                              "syntaxerror", "toomanyconn", "contenterror", "suspend",
                              "authfailure", "requireptr", "spamdetected", "hasmoved"})),
          dtype="smtp"),
    *(
        _rule(f"words.{reason}", 2100 + 10 * i, reason, source, words=(reason,))
        for i, (reason, source) in enumerate(_WORD_SOURCES.items())
    ),
    # --- band 3: codes and the report when no words decided -------------------------------------
    _rule("status.named", 3000, "", f"{RFC3463} and the {IANA}: the code's registered meaning",
          named=tuple(sorted({"userunknown", "hostunknown", "systemerror", "securityerror",
                              "networkerror", "rejected", "notaccept", "blocked", "filtered",
                              "mailboxfull", "exceedlimit", "systemfull", "mesgtoobig",
                              "expired", "syntaxerror", "toomanyconn", "contenterror",
                              "suspend", "authfailure", "requireptr", "spamdetected",
                              "hasmoved"}))),
    _rule("status.content-class", 3100, "contenterror",
          f"{RFC3463} X.6.XXX Message content or media status", codes=("X.6.*",)),
    _rule("status.security-class", 3110, "securityerror",
          f"{RFC3463} X.7.XXX Security or policy status", codes=("X.7.*",)),
    _rule("dtype.x-unix", 3200, "mailererror",
          "RFC 3464 Diagnostic-Code type X-Unix: a local delivery program failed",
          dtype="x-unix"),
    _rule("status.syntax", 3300, "syntaxerror",
          f"{RFC3463} X.5.1 Invalid command, X.5.2 Syntax error, X.5.6", codes=(
              "X.5.1", "X.5.2", "X.5.6")),
    _rule("reply.syntax", 3310, "syntaxerror",
          f"{RFC5321}: 500 syntax error, command unrecognized; 501 syntax error in "
          "parameters; 502 not implemented; 503 bad sequence; 504 parameter not implemented",
          replies=(500, 501, 502, 503, 504)),
    _rule("words.syntax", 3320, "syntaxerror", "Postfix/Sendmail/Exim syntax error texts",
          words=("syntaxerror",)),
    _rule("report.retrying", 3400, "expired",
          "RFC 3464 Action: delayed/expired: the sender is still retrying or gave up in time",
          actions=("delayed", "expired")),
    _rule("command.greeting", 3500, "blocked",
          f"{RFC5321} 554 at the greeting or HELO: the client itself is refused",
          commands=frozenset({"HELO", "EHLO"})),
    _rule("reply.mailbox-unavailable-at-rcpt", 3600, "userunknown",
          f"{RFC5321} 550 'mailbox unavailable' / 553 'mailbox name not allowed' in reply to "
          "RCPT, when nothing else in the report decides",
          replies=(550, 553), commands=frozenset({"RCPT"})),
    _rule("words.vacation", 3700, "vacation", "RFC 3834 auto-reply texts",
          words=("vacation",)),
)
RULES = tuple(sorted(RULES, key=lambda r: r.priority))
BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
_CODE_SETS = {r.id: _code_set(r.codes) for r in RULES}
if len(BY_ID) != len(RULES):
    raise ValueError("rule ids must be unique")

ONHOLD = Decision("onhold", "fallback.onhold", "Nothing in the report decides", "")
UNDEFINED = Decision("undefined", "fallback.undefined", "The report says nothing", "")


def _could_hold(rule: Rule, f: Facts) -> bool:
    """Whether `rule` may hold for `f` as far as the status, reply, command, action, type and
    label go (the words are left to `holds`)."""
    if rule.smtp and f.dtype not in ("smtp", ""):
        return False
    if rule.dtype and not f.dtype.startswith(rule.dtype):
        return False
    if rule.commands is not None and f.command not in rule.commands:
        return False
    if f.command in rule.not_commands:
        return False
    if rule.actions and not f.action.startswith(rule.actions):
        return False
    if rule.label and (not f.label or (rule.reason and f.label != rule.reason)):
        return False
    if rule.codes:
        exact, prefixes = _CODE_SETS[rule.id]
        if f.status not in exact and not (prefixes and f.status.startswith(prefixes)):
            return False
    if rule.named and f.named not in rule.named:
        return False
    return not rule.replies or (f.reply in rule.replies and not f.named)


# The rules that may hold, per combination of those facts: a report has few, and most rules
# are ruled out by them before any word is looked at.
_CANDIDATES: dict[tuple[object, ...], tuple[Rule, ...]] = {}
_MAX_CANDIDATE_SETS = 4096


def _candidates(f: Facts) -> tuple[Rule, ...]:
    key = (f.status, f.named, f.dtype, f.command, f.action, f.label, f.reply)
    found = _CANDIDATES.get(key)
    if found is None:
        if len(_CANDIDATES) >= _MAX_CANDIDATE_SETS:
            _CANDIDATES.clear()
        found = _CANDIDATES[key] = tuple(r for r in RULES if _could_hold(r, f))
    return found


def first_rule(f: Facts, named_reason: str) -> Decision | None:
    """The decision of the first rule that holds, by priority."""
    for rule in _candidates(f):
        evidence = holds(rule, f)
        if evidence is None:
            continue
        reason = rule.reason or (f.label if rule.label else named_reason)
        if reason:
            return Decision(reason, rule.id, rule.source, evidence)
    return None
