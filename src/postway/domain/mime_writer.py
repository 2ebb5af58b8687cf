"""The MIME bytes of an outgoing message, written directly (no I/O, no `email` package).

`message.build_message` used to assemble a `MIMEPart` and flatten it; the header registry,
content managers and generator cost far more than the bytes they wrote. The structure here is
the same and parses back to the same thing (see tests/unit/domain/test_mime_writer.py):

- header fields arrive rendered and folded by `header_render` and are written line by line,
  never parsed, so user text keeps the forms that module chose for it;
- every line ends in CRLF and no bare CR or LF is written: text bodies come in with LF line
  ends only (`message._body`), and both encodings below keep all other control bytes encoded;
- text bodies are 7bit when short-lined printable ASCII, else quoted-printable or base64
  (whichever is smaller); attachments are base64; every encoded line is at most 76 octets;
- a multipart boundary is random and is checked against the bytes of every part it encloses.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postway.domain.header_render import RenderedHeader

CRLF = "\r\n"
_B64_LINE = 76  # characters per base64 line (57 input bytes), as RFC 2045 allows at most
_QP_LINE = 76  # RFC 2045's limit for quoted-printable lines, soft-break "=" included
_7BIT_LINE = 78  # longer plain lines go quoted-printable (RFC 5322's recommended length)

_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_NEEDS_QUOTING = re.compile(rb"[\x80-\xff\x00-\x08\x0b-\x1f]")  # 3 bytes each in QP
# binascii.b2a_qp encodes white space before a line end after its length check, so such a
# line can come out one or two octets over the limit; only these endings can.
_QP_ENCODED_WSP_AT_EOL = (b"=20\r\n", b"=09\r\n")


@dataclass(frozen=True, slots=True)
class Entity:
    """A MIME entity: its Content-* header lines (each ending in CRLF) and its encoded body.

    The body is kept in pieces, each made of whole CRLF-ended lines, and joined once for the
    whole message (a large attachment is not copied again at every level of nesting). As the
    whole message the headers follow the message's own fields; in a multipart they come first.
    """

    headers: str
    body: tuple[bytes, ...]

    def as_part(self) -> list[bytes]:
        return [(self.headers + CRLF).encode("ascii"), *self.body]


def text_cte(data: bytes) -> str:
    """7bit for short-lined plain ASCII; else the smaller of quoted-printable and base64.

    `data` is the UTF-8 text with LF line ends, before the final line end is added.
    """
    plain = data.isascii() and _CONTROL.search(data) is None
    if plain and max(map(len, data.split(b"\n"))) <= _7BIT_LINE:
        return "7bit"
    high = len(_NEEDS_QUOTING.findall(data))
    # Each such byte costs 3 in quoted-printable; base64 costs 4/3 of everything.
    return "quoted-printable" if len(data) + 2 * high <= len(data) * 4 // 3 else "base64"


def text_entity(text: str, subtype: str) -> Entity:
    """A text/<subtype> body in UTF-8; `text` has LF line ends and gets a final one if missing."""
    data = text.encode("utf-8")
    cte = text_cte(data)
    if not data.endswith(b"\n"):
        data += b"\n"
    data = data.replace(b"\n", b"\r\n")  # canonical form: what every encoding below carries
    if cte == "7bit":
        body = data
    elif cte == "quoted-printable":
        body = quoted_printable(data)
    else:
        body = base64_lines(data)
    headers = (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {cte}{CRLF}'
    )
    return Entity(headers, (body,))


def attachment_entity(
    content: bytes, maintype: str, subtype: str, disposition: RenderedHeader
) -> Entity:
    """An attachment: base64 of `content`, with the Content-Disposition rendered for it."""
    headers = (
        f"Content-Type: {maintype}/{subtype}{CRLF}"
        f"Content-Transfer-Encoding: base64{CRLF}"
        f"{field(disposition)}"
    )
    return Entity(headers, (base64_lines(content),))


def multipart_entity(subtype: str, parts: Sequence[Entity]) -> Entity:
    """multipart/<subtype> holding `parts` in order, under a boundary found in none of them."""
    encoded = [part.as_part() for part in parts]
    # Every piece is whole lines and a boundary holds no line break, so checking each piece
    # is checking every line of every part.
    boundary = new_boundary([piece for part in encoded for piece in part])
    opening = b"--" + boundary + b"\r\n"
    body = [piece for part in encoded for piece in (opening, *part, b"\r\n")]
    body.append(b"--" + boundary + b"--\r\n")
    headers = f'Content-Type: multipart/{subtype};{CRLF} boundary="{boundary.decode()}"{CRLF}'
    return Entity(headers, tuple(body))


def new_boundary(parts: Iterable[bytes]) -> bytes:
    """A random boundary occurring nowhere in `parts` (so no line of theirs can close them).

    Quoted-printable and base64 output never hold a run of 15 "=", so only 7bit text or a
    plain file name could contain one, and then only by guessing 96 random bits.
    """
    texts = tuple(parts)
    while True:
        boundary = b"===============" + secrets.token_hex(12).encode("ascii") + b"=="
        if not any(boundary in text for text in texts):
            return boundary


def field(header: RenderedHeader) -> str:
    """One header field as written: its folded lines joined by CRLF, ending in CRLF."""
    return f"{header.name}: {CRLF.join(header.lines)}{CRLF}"


def message_bytes(fields: Iterable[RenderedHeader], entity: Entity, *, utf8: bool) -> bytes:
    """The whole message: `fields`, the entity's Content-* fields, MIME-Version, the body.

    Without `utf8` (SMTPUTF8) the header block must be ASCII; UnicodeEncodeError otherwise.
    """
    head = "".join([field(f) for f in fields]) + entity.headers + "MIME-Version: 1.0" + CRLF * 2
    return b"".join([head.encode("utf-8" if utf8 else "ascii"), *entity.body])


def quoted_printable(data: bytes) -> bytes:
    """Quoted-printable of CRLF-ended text: '=', controls, 8-bit and line-end white space are
    encoded, longer lines get soft breaks, and every output line is at most 76 octets."""
    out = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    if any(end in out for end in _QP_ENCODED_WSP_AT_EOL):
        out = _split_long_qp_lines(out)
    return out


def _split_long_qp_lines(out: bytes) -> bytes:
    """Move an encoded trailing space or TAB that overran the line onto a soft-broken line."""
    lines = out.split(b"\r\n")
    fixed = [line if len(line) <= _QP_LINE else line[:-3] + b"=\r\n" + line[-3:] for line in lines]
    return b"\r\n".join(fixed)


def base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF (empty for empty data)."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[i : i + _B64_LINE] for i in range(0, len(encoded), _B64_LINE)]
    lines.append(b"")
    return b"\r\n".join(lines)
