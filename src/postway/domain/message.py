"""Building the RFC 5322 bytes of an outgoing message from a validated draft (no I/O).

Every channel sends exactly these bytes, so the rules live here once: addresses and header
text are checked by `addresses`, Bcc never appears in headers, output lines end in CRLF, and
bodies are encoded 7-bit-safe (quoted-printable or base64) so any relay can carry them.
Header fields holding user text (names, subject, file names, extra header values) are rendered
by `header_render`, never parsed by the `email` package: its parser decodes encoded-words in
user text and would write them back out as structure (another From address, a new header).
The bytes themselves are written by `mime_writer`, without the `email` package.
"""

from __future__ import annotations

import html as html_lib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from postway.domain.addresses import (
    ascii_form,
    check_display_name,
    check_header_text,
    domain_of,
    needs_smtputf8,
    normalize_address,
)
from postway.domain.header_render import (
    RenderedHeader,
    address_list,
    attachment_disposition,
    mailbox,
    unstructured,
)
from postway.domain.mime_writer import (
    Entity,
    attachment_entity,
    message_bytes,
    multipart_entity,
    text_entity,
)
from postway.domain.visible_recipients import (
    restrict_visible_recipients as restrict_visible_recipients,  # one copy's To/Cc/Bcc
)
from postway.domain.visible_recipients import visible_recipients as visible_recipients
from postway.errors import InvalidInput


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Draft:
    from_name: str
    from_email: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()
    signature: str | None = None  # appended to text, and to html as an escaped <br> block
    headers: tuple[tuple[str, str], ...] = ()  # extra safe headers, e.g. ("X-Postway-Message", id)


@dataclass(frozen=True)
class BuiltMessage:
    raw: bytes  # CRLF line endings, ready for SMTP DATA or the Gmail API
    message_id: str  # the Message-ID header value, with angle brackets: "<hex@domain>"
    needs_smtputf8: bool  # some address has a non-ASCII local part: send with SMTPUTF8
    size: int  # len(raw)


SUBJECT_MAX_LEN = 998
FILENAME_MAX_LEN = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# RFC 6838 restricted-name for type and subtype; parameters are not accepted.
_CONTENT_TYPE_RE = re.compile(
    r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", re.ASCII
)
_HEADER_NAME_RE = re.compile(r"[!-9;-~]{1,76}", re.ASCII)  # printable ASCII except ':'
# RFC 5322 msg-id with a dot-atom left part (atext and dots) and a host name right part.
_MESSAGE_ID_RE = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,200}@[A-Za-z0-9.-]{1,253}>")

# Extra headers a caller may set: its own X- headers plus those needed for threading replies
# and unsubscribe links. Anything else (From, Bcc, Content-*, Received, DKIM-...) stays ours.
_ALLOWED_EXTRA_HEADERS = frozenset(
    {
        "in-reply-to",
        "references",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "precedence",
        "auto-submitted",
        "feedback-id",
    }
)


@dataclass(frozen=True)
class _Clean:
    """A draft after validation: every address normalized, every text checked."""

    from_name: str
    from_email: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: str | None
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[tuple[str, str, str, bytes], ...]  # filename, maintype, subtype, bytes
    headers: tuple[tuple[str, str], ...]


def new_message_id(domain: str) -> str:
    """A fresh globally unique Message-ID value, "<32 hex digits@domain>" (domain in ASCII)."""
    return f"<{uuid.uuid4().hex}@{_check_id_domain(domain)}>"


def validate_draft(draft: Draft) -> None:
    """Run every check `build_message` runs; raise InvalidInput naming the first bad field."""
    _clean(draft)


def envelope_recipients(draft: Draft) -> tuple[str, ...]:
    """Normalized To + Cc + Bcc in order, each address once (IDN and xn-- spellings are one).

    These are the addresses a Delivery is created for: one per distinct recipient, so an
    address typed in both To and Cc is sent to once.
    """
    clean = _clean(draft)
    seen: set[str] = set()
    result: list[str] = []
    for address in (*clean.to, *clean.cc, *clean.bcc):
        key = ascii_form(address)
        if key not in seen:
            seen.add(key)
            result.append(address)
    return tuple(result)


def build_message(
    draft: Draft,
    *,
    message_id_domain: str,
    date: datetime | None = None,
    message_id: str | None = None,
) -> BuiltMessage:
    """Validate `draft` and render it as MIME bytes; raise InvalidInput on any bad field.

    Structure: text/plain or text/html alone, multipart/alternative when both, wrapped in
    multipart/mixed when there are attachments. A naive `date` is taken as UTC.
    """
    clean = _clean(draft)
    mid = _check_message_id(message_id) if message_id else new_message_id(message_id_domain)
    when = date or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)

    smtputf8 = any(
        needs_smtputf8(a)
        for a in (clean.from_email, *clean.to, *clean.cc, *clean.bcc, clean.reply_to or "x@x")
    )
    fields = [
        # The From field holds exactly one address, the identity's; see header_render.mailbox.
        mailbox("From", _addr_spec(clean.from_email), clean.from_name)
    ]
    if clean.to:
        fields.append(address_list("To", [_addr_spec(a) for a in clean.to]))
    if clean.cc:
        fields.append(address_list("Cc", [_addr_spec(a) for a in clean.cc]))
    # Bcc is deliberately never written: Bcc recipients exist only in the envelope.
    if clean.reply_to:
        fields.append(mailbox("Reply-To", _addr_spec(clean.reply_to), ""))
    fields.append(unstructured("Subject", clean.subject))
    fields.append(RenderedHeader("Date", [format_datetime(when)]))
    fields.append(RenderedHeader("Message-ID", [mid]))
    fields.extend(unstructured(name, value) for name, value in clean.headers)

    try:
        raw = message_bytes(fields, _body_entity(clean), utf8=smtputf8)
    except UnicodeError as exc:  # unreachable after the checks above
        raise InvalidInput(f"message could not be encoded: {exc}") from exc
    return BuiltMessage(raw=raw, message_id=mid, needs_smtputf8=smtputf8, size=len(raw))


# --- validation ---------------------------------------------------------------------------


def _clean(draft: Draft) -> _Clean:
    from_name = check_display_name(draft.from_name, field="from_name")
    from_email = normalize_address(draft.from_email, field="from_email")
    to = _addresses(draft.to, "to")
    cc = _addresses(draft.cc, "cc")
    bcc = _addresses(draft.bcc, "bcc")
    if not (to or cc or bcc):
        raise InvalidInput("to: add at least one recipient (to, cc or bcc)", field="to")
    reply_to = None
    if draft.reply_to is not None and draft.reply_to.strip(" \t"):
        reply_to = normalize_address(draft.reply_to, field="reply_to")
    subject = check_header_text(draft.subject, field="subject", max_len=SUBJECT_MAX_LEN)
    signature = _body(draft.signature, "signature")
    text = _body(draft.text, "text")
    html = _body(draft.html, "html")
    if signature and signature.strip():
        text, html = _with_signature(text, html, signature)
    attachments = tuple(
        _attachment(a, f"attachments[{i}]")
        for i, a in enumerate(_seq(draft.attachments, "attachments"))
    )
    if text is None and html is None and not attachments and not subject:
        raise InvalidInput(
            "text: the message is empty; give a subject, a text or html body, or an attachment",
            field="text",
        )
    headers = tuple(
        _extra_header(h, f"headers[{i}]") for i, h in enumerate(_seq(draft.headers, "headers"))
    )
    return _Clean(
        from_name, from_email, to, cc, bcc, reply_to, subject, text, html, attachments, headers
    )


def _seq(values: object, field: str) -> tuple[object, ...]:
    # A bare string here is a common client mistake ("to": "bob@x.com"); iterating it would
    # yield one "address" per character, so it is refused with a clear message.
    if isinstance(values, str | bytes) or not isinstance(values, tuple | list):
        raise InvalidInput(f"{field}: expected a list", field=field)
    return tuple(values)


def _addresses(values: object, field: str) -> tuple[str, ...]:
    return tuple(
        normalize_address(str(v) if not isinstance(v, str) else v, field=f"{field}[{i}]")
        for i, v in enumerate(_seq(values, field))
    )


def _body(value: str | None, field: str) -> str | None:
    """Body text with line endings unified to LF (CRLF is restored on output).

    Lone CR or LF in the output is how SMTP smuggling works, so no bare CR survives here.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected text", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{field}: contains characters that are not valid Unicode text", field=field
        ) from exc
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _with_signature(
    text: str | None, html: str | None, signature: str
) -> tuple[str | None, str | None]:
    """Append the signature to each body present; alone, the signature becomes the text body."""
    sig = signature.strip("\n")
    # "-- " is the RFC 3676 signature delimiter: mail clients leave it out of quoted replies.
    new_text = f"{text.rstrip(chr(10))}\n\n-- \n{sig}\n" if text is not None else None
    new_html = None
    if html is not None:
        escaped = "<br>\n".join(html_lib.escape(line) for line in sig.split("\n"))
        block = f'<div class="postway-signature"><br>\n-- <br>\n{escaped}</div>\n'
        # Inside </body> when the html is a full document, so the block is rendered.
        at = html.lower().rfind("</body>")
        new_html = html[:at] + block + html[at:] if at >= 0 else html + block
    if new_text is None and new_html is None:
        new_text = f"-- \n{sig}\n"
    return new_text, new_html


def _attachment(att: object, field: str) -> tuple[str, str, str, bytes]:
    if not isinstance(att, Attachment):
        raise InvalidInput(f"{field}: expected an attachment", field=field)
    filename = check_header_text(att.filename, field=f"{field}.filename", max_len=FILENAME_MAX_LEN)
    # Mail clients trim any Unicode whitespace around a filename; trim it here so what is
    # stored is what recipients see.
    filename = filename.strip()
    if not filename:
        raise InvalidInput(f"{field}.filename: a file name is required", field=f"{field}.filename")
    # Folders mean nothing to a recipient and some clients act on them; parsers also strip
    # <...> from parameter values (email.utils.unquote), so the name would arrive changed.
    for ch in "/\\<>":
        if ch in filename:
            raise InvalidInput(
                f"{field}.filename: {filename!r} contains {ch!r}; give a plain file name "
                "without folders or angle brackets",
                field=f"{field}.filename",
            )
    ctype = (att.content_type or "").strip().lower() or DEFAULT_CONTENT_TYPE
    if not _CONTENT_TYPE_RE.fullmatch(ctype):
        raise InvalidInput(
            f"{field}.content_type: {att.content_type!r} is not a media type like "
            "'application/pdf' (type/subtype, no parameters)",
            field=f"{field}.content_type",
        )
    maintype, subtype = ctype.split("/", 1)
    # Attachments are always base64 (bytes survive any relay), but RFC 2046 forbids base64 for
    # message/* and multipart/* and parsers then misread them, so those go as opaque bytes.
    if maintype in ("message", "multipart"):
        maintype, subtype = DEFAULT_CONTENT_TYPE.split("/")
    if not isinstance(att.content, bytes | bytearray | memoryview):
        raise InvalidInput(f"{field}.content: expected bytes", field=f"{field}.content")
    return filename, maintype, subtype, bytes(att.content)


def _extra_header(item: object, field: str) -> tuple[str, str]:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise InvalidInput(f"{field}: expected a (name, value) pair", field=field)
    name, value = item
    if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
        raise InvalidInput(f"{field}: {name!r} is not a valid header name", field=field)
    if not (name.lower().startswith("x-") or name.lower() in _ALLOWED_EXTRA_HEADERS):
        raise InvalidInput(
            f"{field}: header {name!r} cannot be set; use an X- header or one of "
            f"{', '.join(sorted(_ALLOWED_EXTRA_HEADERS))}",
            field=field,
        )
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: the value of {name} must be text", field=field)
    return name, check_header_text(value, field=f"{field}.value")


def _check_id_domain(domain: str) -> str:
    try:
        ascii_domain = domain_of(f"x@{domain}")
    except InvalidInput as exc:
        raise InvalidInput(f"message_id_domain: {exc}", field="message_id_domain") from exc
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?", ascii_domain):
        raise InvalidInput(
            f"message_id_domain: {domain!r} is not a host name", field="message_id_domain"
        )
    return ascii_domain


def _check_message_id(value: str) -> str:
    mid = value.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    if not _MESSAGE_ID_RE.fullmatch(mid):
        raise InvalidInput(
            f"message_id: {value!r} is not a Message-ID like '<id@host.example>'",
            field="message_id",
        )
    return mid


# --- rendering ----------------------------------------------------------------------------


def _addr_spec(address: str) -> str:
    """Header form of a normalized address: ASCII domain unless the local part is UTF-8 anyway.

    Without SMTPUTF8 a Unicode domain cannot appear in a header, so the IDNA form is used.
    `normalize_address` guarantees a dot-atom local part, which needs no quoting.
    """
    local, _, domain = address.rpartition("@")
    if not needs_smtputf8(address):
        domain = domain_of(address)
    return f"{local}@{domain}"


def _body_entity(clean: _Clean) -> Entity:
    """text/plain or text/html alone, multipart/alternative for both, in multipart/mixed with
    attachments (or alone in it: an attachment-only message); an empty text/plain at least."""
    bodies = []
    if clean.text is not None:
        bodies.append(text_entity(clean.text, "plain"))
    if clean.html is not None:
        bodies.append(text_entity(clean.html, "html"))
    body = multipart_entity("alternative", bodies) if len(bodies) == 2 else None
    if body is None and bodies:
        body = bodies[0]
    if not clean.attachments:
        return body or text_entity("", "plain")
    # The file name is rendered by header_render (RFC 2231 when not plain ASCII), never parsed.
    attachments = [
        attachment_entity(content, maintype, subtype, attachment_disposition(filename))
        for filename, maintype, subtype, content in clean.attachments
    ]
    return multipart_entity("mixed", [body, *attachments] if body else attachments)
