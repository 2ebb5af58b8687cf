"""Defensive MIME helpers: bounces are often malformed, and nothing here may raise."""

from __future__ import annotations

import email.header
import re
from collections.abc import Iterator
from email.message import Message
from typing import cast

from postway.bounces.mime_split import CONTENT_TYPE_KEY, split_message

# Bounded repeats keep the scan linear on hostile input (RFC 5321 limits: 64 and 255).
ADDRESS_RE = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}",
    re.ASCII,
)
_MAX_DEPTH = 40  # deeper nesting than this is an attack, not mail
# What the parser reads of untrusted text. A report's verdict sits in its first pages (the
# largest text part in the reference corpus is under 60 KB), while the intake accepts 10 MB:
# reading only the first MAX_PART_CHARS of each decoded part and MAX_HEADER_CHARS of each
# header bounds the work of every pattern that scans them, whatever arrives.
MAX_PART_CHARS = 128 * 1024
MAX_HEADER_CHARS = 4 * 1024


def parse_message(raw: bytes) -> Message:
    """Parse bytes into the tree the lenient compat32 policy gives (policy.default raises on bad
    headers), with the linear splitter of `mime_split` (the standard parser cost a third of
    the classifier's time)."""
    # Normalise CRLF so header folding and body searches see one line ending.
    return split_message(raw.replace(b"\r\n", b"\n"))


_HEADERS_KEY = "_postway_headers"


def _get(msg: Message, name: str) -> object:
    """`msg.get(name)`, from an index of the first value of each name made once per message
    (Message.get compares every header's name on every call; a report is asked for many)."""
    index = msg.__dict__.get(_HEADERS_KEY)
    if index is None:
        index = {}
        # read only, as Message.get reads it (typeshed does not declare the private list)
        for key, raw in msg._headers:  # type: ignore[attr-defined]  # noqa: SLF001
            index.setdefault(key.lower(), (key, raw))
        msg.__dict__[_HEADERS_KEY] = index
    found = index.get(name.lower())
    return None if found is None else msg.policy.header_fetch_parse(*found)


def header(msg: Message, name: str) -> str:
    """A header's value decoded to text ("" when absent or undecodable)."""
    try:
        value = _get(msg, name)
        if value is None:
            return ""
        # decode_header's encoded-word pattern rescans a line from every "=?": bound the line.
        value = str(value)[:MAX_HEADER_CHARS]
        if "=?" not in value:
            return value.strip()  # no encoded word: what decode_header would give back
        parts = email.header.decode_header(value)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                out.append(_decode_bytes(chunk, charset))
            else:
                out.append(chunk)
        return " ".join(s.strip() for s in out if s).strip()
    except Exception:  # noqa: BLE001 - malformed encoded-words must not stop parsing
        return str(msg.get(name, "") or "")[:MAX_HEADER_CHARS]


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")


def content_type(part: Message) -> str:
    """The lower-cased content type; a malformed value counts as text/plain.

    Kept on the part once read: every reader of a report asks each part for it again, and
    the email package re-parses the header on every call (the hottest path of the parser)."""
    cached = part.__dict__.get(CONTENT_TYPE_KEY)
    if cached is not None:
        return cached
    try:
        ctype = part.get_content_type()
    except Exception:  # noqa: BLE001
        ctype = ""
    value = ctype.split()[0] if ctype else "text/plain"
    part.__dict__[CONTENT_TYPE_KEY] = value
    return value


def part_text(part: Message) -> str:
    """A leaf part's body as text: transfer-decoded, charset-decoded with fallbacks, and cut to
    MAX_PART_CHARS (what follows is never read). Decoded once per part."""
    cached = part.__dict__.get("_postway_text")
    if cached is not None:
        return cached
    text = _part_text(part)
    part.__dict__["_postway_text"] = text
    return text


def _part_text(part: Message) -> str:
    try:
        # decode=True gives bytes, or None for a multipart (typeshed's overload is wider)
        payload = cast("bytes | None", part.get_payload(decode=True))
    except Exception:  # noqa: BLE001
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw[:MAX_PART_CHARS] if isinstance(raw, str) else ""
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001
        charset = None
    return _decode_bytes(payload, charset)[:MAX_PART_CHARS]


_PARTS_KEY = "_postway_parts"


def walk(msg: Message) -> Iterator[Message]:
    """Depth-first parts, like Message.walk() but bounded in depth. The list is made once per
    message (several readers of one report walk it)."""
    parts = msg.__dict__.get(_PARTS_KEY)
    if parts is None:
        parts = msg.__dict__[_PARTS_KEY] = list(_walk(msg, 0))
    return iter(parts)


def _walk(msg: Message, depth: int) -> Iterator[Message]:
    yield msg
    if depth >= _MAX_DEPTH or not msg.is_multipart():
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub, depth + 1)


def leaf_parts(msg: Message) -> Iterator[tuple[Message, bool]]:
    """Leaf parts with a flag telling whether they sit inside a returned message."""
    yield from _leaves(msg, False, 0)


def _leaves(msg: Message, inside: bool, depth: int) -> Iterator[tuple[Message, bool]]:
    if depth >= _MAX_DEPTH:
        return
    ctype = content_type(msg)
    payload = msg.get_payload() if msg.is_multipart() else None
    if isinstance(payload, list):
        nested = inside or ctype in ("message/rfc822", "message/global")
        for sub in payload:
            if isinstance(sub, Message):
                yield from _leaves(sub, nested, depth + 1)
        return
    yield msg, inside


def addresses(text: str) -> list[str]:
    """Email addresses in `text`, in order, lower-cased, de-duplicated."""
    seen: dict[str, None] = {}
    for m in ADDRESS_RE.finditer(text):
        seen.setdefault(m.group(0).strip(".").lower(), None)
    return list(seen)


def first_address(text: str) -> str | None:
    found = addresses(text)
    return found[0] if found else None
