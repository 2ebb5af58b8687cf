"""DKIM relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4) with bytes operations.

The message is read the way dkimpy (our test oracle) reads it: lines end at CRLF or a bare
LF, the header block ends at the first empty line, a line starting with WSP continues the
field above, a field name is the printable run before the first ':' and an mbox "From " line
is skipped. Every step is a split, find or replace in C: no regex per line or per field.
"""

from __future__ import annotations

import hashlib
import re

_PRINTABLE = bytes(range(0x21, 0x7F))  # what a field name may hold (dkimpy: [\x21-\x7e])
# Only for a line starting with ':', where a lazy printable run may take the colon itself
_NAME_RE = re.compile(rb"[\x21-\x7e]+?:")


class MessageFormatError(ValueError):
    """A header line that is neither a field, a continuation nor an mbox From line."""


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(fields, body): each field's name and raw value (its lines joined without line ends),
    in order; the body after the empty line, with every line ending made CRLF."""
    if message.startswith(b"\n"):
        head, body = b"", message[1:]
    elif message.startswith(b"\r\n"):
        head, body = b"", message[2:]
    else:
        crlf, lf = message.find(b"\n\r\n"), message.find(b"\n\n")
        if crlf >= 0 and (lf < 0 or crlf < lf):
            head, body = message[: crlf + 1], message[crlf + 3 :]
        elif lf >= 0:
            head, body = message[: lf + 1], message[lf + 2 :]
        else:
            head, body = message, b""
    if body.count(b"\n") != body.count(b"\r\n"):  # a bare LF ends a line too
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _fields(head), body


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the line end of the last field
    names: list[bytes] = []
    values: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not values:
                raise MessageFormatError("the header starts with a continuation line")
            values[-1].append(line)
            continue
        colon = line.find(b":")
        if colon > 0 and not line[:colon].translate(None, _PRINTABLE):
            names.append(line[:colon])
            values.append([line[colon + 1 :]])
            continue
        m = _NAME_RE.match(line) if colon == 0 else None
        if m is not None:
            names.append(m.group()[:-1])
            values.append([line[m.end() :]])
        elif not line.startswith(b"From "):
            raise MessageFormatError(f"not a header field: {line[:80]!r}")
    return [(n, b"".join(v)) for n, v in zip(names, values, strict=True)]


def relaxed_value(value: bytes) -> bytes:
    """A field value, unfolded: WSP runs made one space, white space at both ends removed."""
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value.strip()  # as dkimpy: bytes.strip, so CR, VT and FF at the ends go too


def relaxed_field(name: bytes, value: bytes) -> bytes:
    """`name:value` as hashed, with its CRLF."""
    return name.lower() + b":" + relaxed_value(value) + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """The body (CRLF line ends) canonicalised: WSP runs one space, none at line ends, the
    empty lines at the end removed, and a CRLF after the last line; empty stays empty."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    while b"  " in body:  # each pass halves the runs: log2(longest run) passes
        body = body.replace(b"  ", b" ")
    if b" \r\n" in body:  # one pass is enough: no run is longer than one space now
        body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    if body.endswith(b"\r\n"):
        kept = body.rstrip(b"\r\n")
        tail = body[len(kept) :]
        if tail.count(b"\r\n") * 2 == len(tail):  # CRLF pairs only (no bare CR among them)
            end = len(kept)
        else:
            while body.endswith(b"\r\n", 0, end):
                end -= 2
    if end == 0:
        return b""
    return body if end == len(body) - 2 else body[:end] + b"\r\n"


def body_hash(body: bytes) -> bytes:
    """SHA-256 of the relaxed body."""
    return hashlib.sha256(relaxed_body(body)).digest()
