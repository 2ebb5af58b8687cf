"""RFC 3464 delivery status notifications: per-recipient fields and the returned headers.

Also reads DSN-style field blocks ("Final-Recipient:", "Status:", ...) that some MTAs put in a
text/plain body instead of a message/delivery-status part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from postway.bounces.mime import (
    MAX_PART_CHARS,
    content_type,
    first_address,
    leaf_parts,
    part_text,
    walk,
)

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient block of a DSN, values as written (type prefixes stripped)."""

    recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str
    diagnostic_type: str | None  # "smtp", "x-unix", ... from "Diagnostic-Code: TYPE; text"
    remote_mta: str | None


def field_blocks(text: str) -> list[dict[str, str]]:
    """Blank-line separated header-like blocks; continuation lines are unfolded.

    A repeated field keeps its first value (RFC 3464 allows each once per block).
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last:
            current[last] = f"{current[last]} {line.strip()}"
            continue
        m = _FIELD_RE.match(line)
        if m:
            last = m.group(1).lower()
            if last in current:
                last = None  # ignore the repeat and its continuation lines
            else:
                current[last] = m.group(2).strip()
        else:
            last = None
    if current:
        blocks.append(current)
    return blocks


def _typed(value: str | None) -> tuple[str | None, str]:
    """Split "TYPE; value" (the DSN convention) into its two halves."""
    if not value:
        return None, ""
    kind, sep, rest = value.partition(";")
    if sep and kind.strip() and " " not in kind.strip():
        return kind.strip().lower(), rest.strip()
    return None, value.strip()


def recipients_from_blocks(blocks: list[dict[str, str]]) -> list[DsnRecipient]:
    """Per-recipient blocks in report order (blocks naming no recipient are skipped)."""
    found: list[DsnRecipient] = []
    for block in blocks:
        address = None
        for name in _RECIPIENT_FIELDS:
            _, value = _typed(block.get(name))
            address = first_address(value) if value else None
            if address:
                break
        if not address and not ("action" in block and "status" in block):
            continue
        dtype, diagnostic = _typed(block.get("diagnostic-code"))
        _, remote = _typed(block.get("remote-mta"))
        found.append(DsnRecipient(
            recipient=address,
            action=(block.get("action") or "").split()[0].lower() if block.get("action") else None,
            status=(block.get("status") or "").strip() or None,
            diagnostic=diagnostic,
            diagnostic_type=dtype,
            remote_mta=remote or None,
        ))
    return found


def _status_part_text(part: Message) -> str:
    """The text of a message/delivery-status part, however the parser stored it."""
    payload = part.get_payload()
    if isinstance(payload, list):  # compat32 parses each block as a header-only message
        blocks = []
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append("\n".join(f"{k}: {v}" for k, v in sub.items()))
        return "\n\n".join(blocks)[:MAX_PART_CHARS]
    return part_text(part)


def delivery_status_text(msg: Message) -> str | None:
    """The concatenated text of all message/delivery-status parts, or None if there is none
    (read once per message: several readers of one report ask for it)."""
    if "_postway_dsn_text" in msg.__dict__:
        return msg.__dict__["_postway_dsn_text"]
    text = _delivery_status_text(msg)
    msg.__dict__["_postway_dsn_text"] = text
    return text


def _delivery_status_text(msg: Message) -> str | None:
    texts = [
        _status_part_text(p)
        for p in walk(msg)
        if content_type(p) in ("message/delivery-status", "message/global-delivery-status")
    ]
    return "\n\n".join(texts)[:MAX_PART_CHARS] if texts else None


def parse_dsn(msg: Message) -> list[DsnRecipient]:
    """Per-recipient results of the message's delivery-status parts ([] when none)."""
    text = delivery_status_text(msg)
    if text is None:
        return []
    return recipients_from_blocks(field_blocks(text))


def returned_headers(msg: Message) -> Message | None:
    """The headers of the returned message (message/rfc822 or text/rfc822-headers part),
    found (and for text/rfc822-headers parsed) once per message."""
    if "_postway_returned" not in msg.__dict__:
        msg.__dict__["_postway_returned"] = _returned_headers(msg)
    return msg.__dict__["_postway_returned"]


def _returned_headers(msg: Message) -> Message | None:
    for part in walk(msg):
        ctype = content_type(part)
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if ctype == "text/rfc822-headers":
            from postway.bounces.mime import parse_message

            return parse_message(part_text(part).encode("utf-8", "replace"))
    return None


def human_text(msg: Message) -> str:
    """The human-readable text of the report: text parts outside any returned message."""
    plain: list[str] = []
    html: list[str] = []
    for part, inside in leaf_parts(msg):
        if inside:
            continue
        ctype = content_type(part)
        broken = ctype.startswith(("multipart/", "message/")) and isinstance(
            part.get_payload(), str)  # a multipart whose boundary never came: read it as text
        if broken or ctype == "text/plain" or (ctype.startswith("text/") and ctype not in (
                "text/html", "text/rfc822-headers")):
            plain.append(part_text(part))
        elif ctype == "text/html":
            html.append(_strip_html(part_text(part)))
    # The body as a whole is bounded like each part (the parts of a 10 MB message add up).
    return ("\n".join(plain) if plain else "\n".join(html))[:MAX_PART_CHARS]


# Tag stripping, done by hand rather than with `re.sub` so that it stays linear: a pattern such
# as `<[^>]{0,2000}>` retries up to 2,000 characters from every "<" of a "<<<<..." run, and
# `<script\b.*?</script>` scans to the end of the text from every unclosed "<script".
_BLOCK_TAG_RE = re.compile(r"<(?:br|p|div|tr|li)\b", re.IGNORECASE)
_ANY_TAG_RE = re.compile(r"<")
_MAX_TAG = 2000  # characters between a tag's name and its ">"; longer is not a tag
_SCRIPT_RE = re.compile(r"<(script|style)\b", re.IGNORECASE)
_SCRIPT_END_RE = {
    "script": re.compile(r"</script>", re.IGNORECASE),
    "style": re.compile(r"</style>", re.IGNORECASE),
}
_ENTITY = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}


def _strip_html(html: str) -> str:
    text = _drop_scripts(html)
    text = _replace_tags(_replace_tags(text, _BLOCK_TAG_RE, "\n"), _ANY_TAG_RE, " ")
    for entity, char in _ENTITY.items():
        text = text.replace(entity, char)
    return text


def _replace_tags(text: str, opener: re.Pattern[str], repl: str) -> str:
    """Replace each `opener` followed by at most _MAX_TAG non-">" characters and a ">" (what
    `re.sub(opener + "[^>]{0,2000}>", repl, text)` does), in one pass."""
    out: list[str] = []
    done = 0  # text[:done] is written out
    close = -1  # the first ">" at or after the last place looked at (cached: one scan in all)
    pos = 0
    while (m := opener.search(text, pos)) is not None:
        if close < m.end():
            close = text.find(">", m.end())
            if close < 0:
                break  # no ">" after here: no more tags
        if close - m.end() > _MAX_TAG:
            pos = m.start() + 1
            continue
        out += (text[done:m.start()], repl)
        done = pos = close + 1
    out.append(text[done:])
    return "".join(out)


def _drop_scripts(html: str) -> str:
    """Replace <script>...</script> and <style>...</style> by a space (case-insensitive, the
    first closing tag ends it), in one pass: a closing tag missing once is missing for every
    later opening tag of that name."""
    out: list[str] = []
    done = pos = 0
    unclosed: set[str] = set()
    while (m := _SCRIPT_RE.search(html, pos)) is not None:
        name = "script" if len(m.group(1)) == 6 else "style"  # the group may be "SCRİPT"...
        end = None if name in unclosed else _SCRIPT_END_RE[name].search(html, m.end())
        if end is None:
            unclosed.add(name)
            pos = m.start() + 1
            continue
        out += (html[done:m.start()], " ")
        done = pos = end.end()
    out.append(html[done:])
    return "".join(out)


def reporting_mta(msg: Message) -> str | None:
    """The Reporting-MTA host of a DSN (the system that wrote the report), if stated."""
    text = delivery_status_text(msg)
    if not text:
        return None
    for block in field_blocks(text):
        _, value = _typed(block.get("reporting-mta"))
        if value:
            return value
    return None
