"""Which recipients a message's headers name, and the same message naming only some (no I/O).

API channels (Gmail, Microsoft Graph) send to the addresses in To, Cc and Bcc of the raw
message: there is no envelope. When only some recipients of a stored message are to be sent
now (others suppressed, blocked, already sent, waiting), the copy sent must name only them.

Bcc (RFC 5322 section 3.6.3 allows three forms). The stored raw never holds Bcc. Each Bcc
recipient is sent a copy of its own naming only its own address in Bcc, with To and Cc left
out: the section's second form (a separate copy whose Bcc holds only that recipient) minus
To/Cc, because a header-addressed API would send every To/Cc recipient another copy. Gmail
drops Bcc from what it delivers; no Bcc address is ever shown to anyone else. The cost: a
Bcc recipient does not see the visible recipients. Envelope channels (SMTP) need none of
this: they send the stored raw to every recipient, which is the section's first form.

The raw is one Postway built (`message.build_message`): CRLF line ends, one To and one Cc
field holding bare addr-specs separated by commas (`header_render.address_list`). It is read
with a strict linear split on CRLF into fields and their folded continuation lines; only the
To, Cc (and Bcc) fields are rewritten; every other field byte and the body stay as they are,
Message-ID included. Anything else is refused with InvalidInput rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from postway.domain.addresses import ascii_form
from postway.domain.header_render import address_list
from postway.errors import InvalidInput

_CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"[!-9;-~]{1,76}:")  # printable ASCII except ':', then the colon
_ADDR_SPEC = re.compile(r"[^\s,<>()\[\]\"\\;:@]+@[^\s,<>()\[\]\"\\;:@]+")
_VISIBLE = ("to", "cc")


@dataclass(frozen=True)
class _Field:
    name: str  # as written, e.g. "To"
    data: bytes  # the whole field, every line with its CRLF


def visible_recipients(raw: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The addresses the To and Cc fields name, in order, as written there."""
    fields, _ = _split(raw)
    return _addresses(fields, "to"), _addresses(fields, "cc")


def restrict_visible_recipients(
    raw: bytes, to: Sequence[str], cc: Sequence[str], bcc: Sequence[str] = ()
) -> bytes:
    """`raw` with To and Cc naming only `to` and `cc`, and Bcc naming only `bcc`.

    `to` and `cc` must be among the addresses the message's own To and Cc name (compared with
    the domain in ASCII, case-insensitively); they keep the field's order and spelling, and a
    field left empty is dropped. `bcc` (a Bcc copy: see the module docstring, pass `to` and `cc`
    empty) becomes a Bcc field where To stood. Every other header field and the body are kept
    byte for byte. Raises InvalidInput for a raw Postway did not build, an address the field
    does not name, or a result naming nobody.
    """
    fields, body = _split(raw)
    kept = {
        "to": _keep(_addresses(fields, "to"), to, "To"),
        "cc": _keep(_addresses(fields, "cc"), cc, "Cc"),
    }
    bcc_list = [_checked(a, "bcc") for a in bcc]
    if not (kept["to"] or kept["cc"] or bcc_list):
        raise InvalidInput("to: the copy would name no recipient", field="to")
    out: list[bytes] = []
    bcc_at: int | None = None
    for f in fields:
        key = f.name.lower()
        if key in _VISIBLE:
            bcc_at = len(out) if bcc_at is None else bcc_at
            if kept[key]:
                out.append(_render(f.name, kept[key]))
        elif key != "bcc":  # never in a raw Postway built; never passed on if it were
            out.append(f.data)
    if bcc_list:
        at = bcc_at if bcc_at is not None else _after_from(fields)
        out.insert(at, _render("Bcc", bcc_list))
    return b"".join(out) + _CRLF + body


# --- reading the header block -------------------------------------------------------------


def _split(raw: bytes) -> tuple[list[_Field], bytes]:
    """The header fields (each with its continuation lines) and the body after the blank line.

    Linear: one search for the blank line, one split on CRLF, one pass over the lines.
    """
    end = raw.find(_CRLF + _CRLF)
    if end < 0:
        raise InvalidInput("raw: no blank line ends the header (not a message Postway built)")
    fields: list[tuple[str, list[bytes]]] = []
    for line in raw[:end].split(_CRLF):
        if b"\r" in line or b"\n" in line:
            raise InvalidInput("raw: a header line holds a bare CR or LF")
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise InvalidInput("raw: the header starts with a continuation line")
            fields[-1][1].append(line)
            continue
        m = _FIELD_NAME.match(line)
        if m is None:
            raise InvalidInput(f"raw: {line[:40]!r} is not a header field")
        fields.append((m.group()[:-1].decode("ascii"), [line]))
    parsed = [_Field(name, b"".join(ln + _CRLF for ln in lines)) for name, lines in fields]
    return parsed, raw[end + 2 * len(_CRLF) :]


def _addresses(fields: list[_Field], key: str) -> tuple[str, ...]:
    found = [f for f in fields if f.name.lower() == key]
    if not found:
        return ()
    if len(found) > 1:
        raise InvalidInput(f"raw: more than one {found[0].name} field")
    f = found[0]
    try:
        # Unfolding is removing each CRLF; the continuation's white space stays (RFC 5322 2.2.3).
        value = f.data[len(f.name) + 1 :].replace(_CRLF, b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"raw: the {f.name} field is not UTF-8") from exc
    items = [item.strip(" \t") for item in value.split(",")]
    for item in items:
        if not _ADDR_SPEC.fullmatch(item):
            raise InvalidInput(
                f"raw: the {f.name} field holds {item[:60]!r}, not a bare address "
                "(not a message Postway built)"
            )
    return tuple(items)


def _key(address: str) -> str:
    try:
        return ascii_form(address).lower()
    except InvalidInput:
        return address.lower()


def _checked(address: str, field: str) -> str:
    if not _ADDR_SPEC.fullmatch(address):
        raise InvalidInput(f"{field}: {address[:60]!r} is not a bare address", field=field)
    return address


def _keep(named: tuple[str, ...], wanted: Sequence[str], field: str) -> list[str]:
    """The addresses of `named` (in its order) that `wanted` asks for; each wanted one must be
    there: this function only takes names away, it never adds a recipient to To or Cc."""
    keys = {_key(a) for a in wanted}
    missing = keys - {_key(a) for a in named}
    if missing:
        raise InvalidInput(
            f"{field.lower()}: {sorted(missing)[0]} is not named in the message's {field}",
            field=field.lower(),
        )
    return [a for a in named if _key(a) in keys]


def _render(name: str, addresses: Sequence[str]) -> bytes:
    lines = address_list(name, list(addresses)).lines
    return f"{name}: {_CRLF.decode().join(lines)}\r\n".encode()


def _after_from(fields: list[_Field]) -> int:
    for i, f in enumerate(fields):
        if f.name.lower() == "from":
            return i + 1
    return 0
