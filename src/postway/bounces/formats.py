"""Bounces that are not RFC 3464: the prose formats of qmail, Exim, old Sendmail and Postfix,
Exchange, Gmail, Yahoo, Lotus Notes, DragonFly and friends.

They share a shape: an explanation, the failed address(es) each followed by the remote server's
words, then a marker and the returned message. So rather than one parser per MTA, this module
finds that shape: cut the returned message off, find the addresses, and give each the text that
follows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postway.bounces.mime import ADDRESS_RE as _ADDRESS_RE
from postway.domain.regex_anchors import Prefiltered

# Lines that start the returned message (or its headers) in prose bounces.
#
# Written to run in linear time on hostile text: every quantifier either stays within one line
# or is possessive (`*+`), so no two adjacent quantifiers can trade the same characters back and
# forth. The old form let `[ \t>]*` and `\s*` share spaces and `\s*` run across every blank
# line from every line start, which took minutes on 40 KB of blank lines. The one case where a
# marker may be preceded by lines of its own (dashes, then blank lines, then "Original message
# follows") is handled by `_marker_start`, walking back once from the line found.
_ORIGINAL_RE = re.compile(
    r"^[ \t>]*+(?:"
    r"-+ ?(?:below this line is a copy|this is a copy|original message|the original message"
    r"|returned message|original message follows|headers of the original|message headers follow"
    r"|unsent message below|undelivered message)"
    r"|-*+[^\S\n]*+(?P<marker>original message follows|original message headers?"
    r"|message headers follow|the headers of the message follow|the text you sent follows"
    r"|unsent message below|\*+ ?original message)"
    r"|-+ ?(?:begin|start) (?:of )?(?:returned|original) message"
    r"|(?:return-path|received|x-received|dkim-signature|message-id|x-original-to|delivered-to)"
    r": ?.+\n(?:[ \t].*\n)*(?:[A-Za-z-]+: ?.*\n)"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
# Searched as its plain twin over the lower-cased text (`regex_anchors`), whole (the caller
# reads the "marker" group).
_ORIGINAL_FAST = Prefiltered(_ORIGINAL_RE, narrow=False)
# A line that may open a marker written over several lines: quote marks, dashes, white space.
_MARKER_LEAD_RE = re.compile(r"[ \t>]*+-*+\s*+")
_COMMANDS = (
    (re.compile(r"rcpt to|\brcpt\b|recipient command|end of rcpt", re.I), "RCPT"),
    (re.compile(r"mail from|\bmail\b|sender command", re.I), "MAIL"),
    (re.compile(r"end of data|final data|\bdata\b|message body|after sending message", re.I),
     "DATA"),
    (re.compile(r"\b(?:ehlo|helo|hello)\b|my name", re.I), "HELO"),
    (re.compile(r"initial connection|greeting|banner|connect", re.I), "CONN"),
)
# The places MTAs name the command that a remote reply answered.
_COMMAND_CONTEXT_RE = re.compile(
    r"in\s+reply\s+to\s+(?:the\s+)?([a-z]+(?:\s+(?:to|from|of))?(?:\s+data)?)\s+command"
    r"|after\s+((?:pipelined\s+)?(?:rcpt\s+to|mail\s+from|end\s+of\s+data|data|rcpt|mail"
    r"|initial\s+connection|ehlo|helo|sending\s+message))\b"
    r"|^[^\S\n]*+>>>\s*(rcpt|mail|data|ehlo|helo)\b"
    r"|did\s+not\s+like\s+our\s+((?:final\s+)?(?:rcpt\s+to|mail\s+from|data)|rcpt|mail)"
    r"|progress\s+was\s+(rcpt\s+to|mail\s+from|data)\s+response"
    r"|connected\s+to\s+.{1,80}\s+but\s+(sender|my\s+name|recipient)\b"
    r"|(?:does\s+not|doesn't|didn't)\s+like\s+(recipient|sender)\b"
    r"|smtp:(rcpt|mail|data|ehlo|helo)\b"
    r"|smtp\s+command\W+(rcpt|mail|data|ehlo|helo)\b"
    r"|(?:while|during|when)\s+(?:sending|executing|issuing)\s+(?:the\s+)?(rcpt\s+to|mail"
    r"\s+from|data|helo|ehlo)",
    re.IGNORECASE | re.MULTILINE,
)
# A literal each alternative needs, tested before the pattern runs over a whole report.
_COMMAND_CONTEXT_FAST = Prefiltered(_COMMAND_CONTEXT_RE)
_NOT_RECIPIENT_RE = re.compile(
    r"^(?:mailer-daemon|postmaster|noreply|no-reply|mail-daemon|root|abuse|bounce[s]?|"
    r"daemon|mail_delivery|maildelivery|mdaemon|nobody)@", re.IGNORECASE)


# Addresses right after these words are the sender or an alias, not a failed recipient.
_NOT_FAILED_CONTEXT_RE = re.compile(
    r"(?:mail from:?|envelope-from|generated from|return-path:|sender:?)\s*<?\s*$", re.I)
# The help desk a report points to (Postfix bounce(5) templates: "For further assistance,
# please send mail to <postmaster>", site templates "please contact <...>") is no recipient,
# wherever else the report names it again.
_HELP_DESK_CONTEXT_RE = re.compile(r"(?:contact|send mail to|write to)\s*<?\s*$", re.I)


@dataclass(frozen=True)
class ProseRecipient:
    recipient: str
    text: str  # the words about this recipient (or the whole report when undivided)


def error_text(text: str) -> str:
    """The report's own words: everything before the returned message starts."""
    m = _ORIGINAL_FAST.search(text)
    if m is None:
        return text
    start = _marker_start(text, m)
    return text[:start] if start > 0 else text


def _marker_start(text: str, m: re.Match[str]) -> int:
    """Where the returned message starts, given the first marker line found.

    A marker such as "Original message follows" may sit below a line of dashes (or quote
    marks) and blank lines that belong to it; the returned message then starts at that line.
    Walking back from the one match found keeps this linear (a pattern that let white space
    run across lines was retried from every blank line)."""
    before = text[m.start():m.start("marker")] if m.group("marker") else None
    if before is None or (before and not before.isspace()):
        return m.start()
    start = m.start()
    while start > 0:
        line_start = text.rfind("\n", 0, start - 1) + 1
        line = text[line_start:start - 1]
        if line.isspace() or not line:
            start = line_start
            continue
        if _MARKER_LEAD_RE.fullmatch(line):
            start = line_start
        break
    return start


def smtp_command(text: str) -> str | None:
    """The SMTP command the failure answered (RCPT, MAIL, DATA, HELO, CONN), if stated.

    When a transcript shows several commands, the last one before the error counts.
    """
    text = text[:32_000]
    found: str | None = None
    for m in _COMMAND_CONTEXT_FAST.finditer(text):
        words = next((g for g in m.groups() if g), "")
        for pattern, name in _COMMANDS:
            if pattern.search(words):
                found = name
                break
    return found


# SMTP verbs as MTAs write them in transcripts and diagnostics: upper case, standing alone.
_LITERAL_COMMANDS = (
    ("HELO", "HELO"), ("EHLO", "EHLO"), ("STARTTLS", "STARTTLS"), ("AUTH ", "AUTH"),
    ("MAIL F", "MAIL"), ("RCPT", "RCPT"), ("DATA", "DATA"), ("QUIT", "QUIT"),
)
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ@._-")


def literal_command(text: str) -> str | None:
    """The latest-stage SMTP verb named in upper case in `text` (as in "550 ... in RCPT"),
    ignoring verbs that are part of a word, an address or a host name (DATABASE@, EHLO.NET)."""
    text = text[:32_000]
    found: str | None = None
    for verb, name in _LITERAL_COMMANDS:
        start = 0
        while True:
            at = text.find(verb, start)
            if at < 0:
                break
            start = at + 1
            before = text[at - 1] if at else " "
            end = at + len(verb)
            after = text[end] if end < len(text) else " "
            if before in _ALNUM or (" " not in verb and after in _ALNUM):
                continue
            found = name
            break
    return found


def prose_recipients(text: str, exclude: set[str]) -> list[ProseRecipient]:
    """Failed addresses found in a prose report, each with the text that concerns it:
    from its first mention to the next address's first mention (report order kept)."""
    first: dict[str, int] = {}
    previous = -1  # the latest start so far (kept, not recomputed: thousands of addresses)
    help_desk: set[str] = set()
    for m in _ADDRESS_RE.finditer(text):
        address = m.group(0).strip(".").lower()
        if (address in first or address in exclude or address in help_desk
                or _NOT_RECIPIENT_RE.match(address)):
            continue
        if _NOT_FAILED_CONTEXT_RE.search(text, max(0, m.start() - 40), m.start()):
            continue
        if _HELP_DESK_CONTEXT_RE.search(text, max(0, m.start() - 40), m.start()):
            help_desk.add(address)
            continue
        # A transcript line such as ">>> RCPT To:<addr>" names the command before the address.
        line_start = text.rfind("\n", max(0, m.start() - 200), m.start()) + 1
        start = line_start if line_start > 0 or m.start() < 200 else m.start()
        first[address] = start if start > previous else m.start()
        previous = max(previous, first[address])
    if not first:
        return []
    found = list(first.items())
    verdicts = _verdict_line_ends(text)
    spans: list[list[int]] = []
    for i, (_, start) in enumerate(found):
        end = found[i + 1][1] if i + 1 < len(found) else len(text)
        spans.append([start, end])
    for i, (address, _) in enumerate(found):
        start, end = spans[i]
        # A Sendmail-style verdict line ("554 <addr>... words") closes the recipient's block:
        # the transcript lines after it ("While talking to", ">>>", "<<<", "NNN host
        # (smtp)... ") lead up to the next recipient's verdict, not back to this one.
        closing = [e for s, e in verdicts.get(address, ()) if start <= s < end]
        if not closing:
            continue
        spans[i][1] = closing[-1]
        if i + 1 < len(found):
            spans[i + 1][0] = min(spans[i + 1][0], closing[-1])
        if i == 0 and any(s == start for s, _ in verdicts.get(address, ())):
            # Its verdict is its first mention: the transcript lines just above lead to it.
            spans[0][0] = _paragraph_start(text, start)
        # Of several SMTP sessions before it, the last one ("While talking to HOST:") is its.
        sessions = list(_SESSION_RE.finditer(text, spans[i][0], found[i][1]))
        if sessions:
            spans[i][0] = sessions[-1].start()
    if len(found) == 1:
        # The words after the address concern it; the preamble is boilerplate.
        address = found[0][0]
        start, end = spans[0]
        tail = text[start:end]
        return [ProseRecipient(address, tail if len(tail.strip()) > len(address) + 3 else text)]
    return [ProseRecipient(address, text[s:e]) for (address, _), (s, e) in zip(
        found, spans, strict=True)]


# "554 <addr>... Remote protocol error", "<<< 550 5.1.1 <addr>... User unknown",
# "addr... Host unknown": the line in which Sendmail gives a recipient its verdict.
_VERDICT_LINE_RE = re.compile(
    r"^[ \t]*(?:<<<[ \t]*)?(?:[245]\d\d[ -]++(?:[245]\.\d{1,3}\.\d{1,3}[ \t]+)?)?"
    r"<?([^\s<>@]{1,64}@[^\s<>@]{1,255}?)>?\.\.\.(?:[ \t].*)?$",
    re.MULTILINE)

_SESSION_RE = re.compile(r"^[ \t]*(?:\.\.\.[ \t]*)?while talking to\b",
                         re.IGNORECASE | re.MULTILINE)


def _verdict_line_ends(text: str) -> dict[str, list[tuple[int, int]]]:
    """For each address, the (line start, line end) of its Sendmail-style verdict lines."""
    found: dict[str, list[tuple[int, int]]] = {}
    for m in _VERDICT_LINE_RE.finditer(text):
        end = m.end() + 1 if text[m.end():m.end() + 1] == "\n" else m.end()
        found.setdefault(m.group(1).strip(".").lower(), []).append((m.start(), end))
    return found


def _paragraph_start(text: str, at: int, limit: int = 2000) -> int:
    """Where the paragraph holding `at` begins: after the last blank line before it."""
    floor = max(0, at - limit)
    blank = max(text.rfind("\n\n", floor, at), text.rfind("\n\r\n", floor, at))
    if blank < 0:
        return floor if floor == 0 else text.find("\n", floor, at) + 1 or at
    return text.find("\n", blank + 1, at) + 1 or at
