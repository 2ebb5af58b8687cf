"""Header fields that carry user text, rendered by Postway itself from validated parts (no I/O).

The `email` package parses every string it is given as a header value, and its parser decodes
RFC 2047 encoded-words wherever it finds them (phrases, quoted strings, parameters), then writes
the decoded text back out: a name typed as `=?utf-8?b?...?=` became another address, a line
break, a new header. So user text never reaches that parser here. It is written only in forms a
reader decodes exactly once, back to the same text:

- printable ASCII holding no `=?`, as is (unstructured fields) or as a quoted-string (names);
- encoded-words made here, always base64 (its alphabet has no `?`, so a word cannot end early);
- RFC 2231 percent-encoding for attachment file names.

The results are header objects (a `name` and a `fold` method): `EmailPolicy.header_store_parse`
keeps such values unparsed and the generator writes what `fold` returns.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from email.policy import Policy

MAX_LINE = 78  # RFC 5322's recommended line length; the hard limit is 998
# 39 bytes are 52 base64 characters: with "=?utf-8?b?" and "?=" a word is 64 long, within
# RFC 2047's 75 and, after "Subject: " or "From: ", within MAX_LINE.
_EW_MAX_BYTES = 39
_WORDS = re.compile(r"[ \t]*[^ \t]+")
# RFC 5987 attr-char: what may stand unescaped in an RFC 2231 extended parameter value.
_ATTR_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)


class RenderedHeader(str):
    """A header value already folded into lines; the email package writes it unchanged.

    The string value is the unfolded field body (continuation lines start with their folding
    white space, so joining them is exactly RFC 5322 unfolding).
    """

    name: str
    lines: tuple[str, ...]

    def __new__(cls, name: str, lines: Sequence[str]) -> RenderedHeader:
        for line in lines:
            # Every caller builds lines from checked parts; this keeps the promise local.
            if "\r" in line or "\n" in line:
                raise ValueError(f"{name}: a rendered header line holds a line break")
        self = super().__new__(cls, "".join(lines))
        self.name = name
        self.lines = tuple(lines)
        return self

    def __getnewargs__(self) -> tuple[str, tuple[str, ...]]:  # type: ignore[override]
        return self.name, self.lines  # copy/deepcopy rebuild it through __new__

    def fold(self, *, policy: Policy) -> str:
        linesep = policy.linesep
        return f"{self.name}: {linesep.join(self.lines)}{linesep}"


def is_plain(text: str) -> bool:
    """True for printable ASCII (space and TAB allowed) that cannot start an encoded-word."""
    return "=?" not in text and all(" " <= ch <= "~" or ch == "\t" for ch in text)


def unstructured(name: str, text: str) -> RenderedHeader:
    """`text` as an unstructured field (Subject, X-...); decoders give back exactly `text`.

    Plain text is written as is, folded before white space; anything else (non-ASCII, a `=?`,
    a word too long to fold) is written as encoded-words, one per line.
    """
    lines = _plain_lines(len(name) + 2, text) if is_plain(text) else None
    return RenderedHeader(name, lines if lines is not None else _encoded_lines(text))


def mailbox(name: str, addr_spec: str, display_name: str) -> RenderedHeader:
    """One mailbox: `"Display Name" <addr-spec>`, or the bare addr-spec when there is no name.

    Invariant callers rely on: the field holds exactly one address, `addr_spec`. The name is a
    quoted-string when it is printable ASCII without `=?`, otherwise encoded-words made here;
    either way no part of it can be read as an address, a comma or a line break.
    `addr_spec` must be a validated dot-atom address (see `addresses.normalize_address`).
    """
    if not display_name:
        return RenderedHeader(name, [addr_spec])
    if is_plain(display_name) and "\t" not in display_name:
        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        lines = [f'"{escaped}"']
    else:
        lines = _encoded_lines(display_name)
    angle = f"<{addr_spec}>"
    used = len(name) + 2 if len(lines) == 1 else 0
    if used + len(lines[-1]) + 1 + len(angle) <= MAX_LINE:
        lines[-1] += " " + angle
    else:
        lines.append(" " + angle)
    return RenderedHeader(name, lines)


def address_list(name: str, addr_specs: Sequence[str]) -> RenderedHeader:
    """Bare addresses separated by commas, folded after a comma when a line gets long."""
    tokens = [f"{a}," for a in addr_specs[:-1]] + list(addr_specs[-1:])
    lines = [tokens[0]]
    used = len(name) + 2
    for token in tokens[1:]:
        if used + len(lines[-1]) + 1 + len(token) <= MAX_LINE:
            lines[-1] += " " + token
        else:
            lines.append(" " + token)
            used = 0
    return RenderedHeader(name, lines)


def attachment_disposition(filename: str) -> RenderedHeader:
    """`Content-Disposition: attachment` with the file name as its only parameter.

    A plain ASCII name without quotes or backslashes is a quoted-string; any other name is
    RFC 2231 percent-encoded UTF-8 (split into numbered sections on character boundaries when
    long), which no reader takes for an encoded-word or for part structure.
    """
    name = "Content-Disposition"
    if is_plain(filename) and not any(ch in filename for ch in '"\\\t'):
        param = f'filename="{filename}"'
        if len(name) + 2 + len("attachment; ") + len(param) <= MAX_LINE:
            return RenderedHeader(name, [f"attachment; {param}"])
        return RenderedHeader(name, ["attachment;", f" {param}"])
    pieces = [
        ch if ch in _ATTR_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in filename
    ]
    whole = "filename*=utf-8''" + "".join(pieces)
    if len(name) + 2 + len("attachment; ") + len(whole) <= MAX_LINE:
        return RenderedHeader(name, [f"attachment; {whole}"])
    if 1 + len(whole) <= MAX_LINE:
        return RenderedHeader(name, ["attachment;", f" {whole}"])
    sections: list[str] = []
    current = ""
    for piece in pieces:
        head = f" filename*{len(sections)}*=" + ("utf-8''" if not sections else "")
        if current and len(head) + len(current) + len(piece) + 1 > MAX_LINE:
            sections.append(head + current)
            current = ""
        current += piece
    sections.append(f" filename*{len(sections)}*=" + ("utf-8''" if not sections else "") + current)
    lines = ["attachment;", *(s + ";" for s in sections[:-1]), sections[-1]]
    return RenderedHeader(name, lines)


def _plain_lines(used: int, text: str) -> list[str] | None:
    """Fold plain text before runs of white space; None when a word cannot fit in a line.

    `used` is what the field name takes on the first line. Text with white space at either
    end is not folded here: readers trim it, so it goes encoded (where it is kept).
    """
    if text != text.strip(" \t"):
        return None
    lines = [""]
    for token in _WORDS.findall(text):  # each token: its leading white space and one word
        if lines[-1] and used + len(lines[-1]) + len(token) > MAX_LINE:
            lines.append(token)
            used = 0
        else:
            lines[-1] += token
        if used + len(lines[-1]) > MAX_LINE:
            return None  # one word too long for any line
    return lines


def _encoded_lines(text: str) -> list[str]:
    """`text` as base64 encoded-words of whole characters, one per line.

    Decoders drop the white space between adjacent encoded-words, so every character of
    `text` (spaces included) lives inside a word and the line breaks add nothing.
    """
    if not text:
        return [""]
    chunks: list[bytes] = []
    current = b""
    for ch in text:
        data = ch.encode("utf-8")
        if current and len(current) + len(data) > _EW_MAX_BYTES:
            chunks.append(current)
            current = b""
        current += data
    chunks.append(current)
    words = [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]
    return [words[0], *(f" {w}" for w in words[1:])]
