"""Address and header-text rules: what may reach an envelope or a header line.

Every value a user or API client supplies for an address, a display name, a subject or any
other header passes through here before it is stored or put on the wire, so header injection
(CR/LF smuggled into a field) is refused in one place. Text that merely looks like an RFC 2047
encoded-word (`=?utf-8?b?...?=`) is kept as text: `header_render` writes it so that readers
decode it back to those same characters, never to what it encodes.
"""

from __future__ import annotations

import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

from postway.errors import InvalidInput

# Characters that would let a caller smuggle a second address, a display name, or a new header
# line into what must be one bare address.
_ADDRESS_FORBIDDEN = {
    "\r": "a line break (CR)",
    "\n": "a line break (LF)",
    "\x00": "a NUL character",
    "<": "an angle bracket",
    ">": "an angle bracket",
    ",": "a comma (give one address per entry)",
    ";": "a semicolon (give one address per entry)",
    # Legal in a dot-atom, but mail readers (CPython's among them) decode an encoded-word in
    # an address's local part, so the address shown would not be the one sent from or to.
    "=?": "'=?', the start of an RFC 2047 encoded-word",
}

DISPLAY_NAME_MAX_LEN = 200
ADDRESS_MAX_LEN = 254  # RFC 5321 path limit (256) minus the angle brackets


def _show(value: str, limit: int = 60) -> str:
    """Quote a user value for an error message, shortened and with control characters visible."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(shown)


def _forbidden_char(value: str) -> str | None:
    """Name the first character that may not appear in header text, or None if all are fine.

    Refused: C0/C1 controls except TAB, DEL, Unicode line/paragraph separators (the email package
    treats them as line breaks when it re-reads headers) and lone surrogates (not encodable).
    """
    for ch in value:
        if ch == "\t":
            continue
        category = unicodedata.category(ch)
        if ch == "\r":
            return "a line break (CR)"
        if ch == "\n":
            return "a line break (LF)"
        if ch == "\x00":
            return "a NUL character"
        if category == "Cc":
            return f"a control character (U+{ord(ch):04X})"
        if category in ("Zl", "Zp"):
            return f"a line separator (U+{ord(ch):04X})"
        if category == "Cs":
            return f"an invalid lone surrogate (U+{ord(ch):04X})"
    return None


# Addresses already found valid, and their normal form: a send checks each address where the
# request is read and again where the message is built, and validation is the costly part.
_VALID: dict[str, str] = {}
_VALID_MAX = 4096


def normalize_address(value: str, *, field: str = "email") -> str:
    """Return the normalized form of one bare email address, or raise InvalidInput naming `field`.

    Invariants callers rely on: the result has exactly one '@', no display name, no quoting,
    no whitespace or control characters, a lower-cased domain (Unicode form for IDN domains —
    use `domain_of` for the ASCII form) and a local part kept as typed (case matters to some
    servers). Deliverability (DNS) is not checked here: that is I/O.
    `.test` domains (RFC 2606, never real) are accepted so demo mode and tests can route them.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected an email address as text", field=field)
    known = _VALID.get(value)
    if known is not None:
        return known
    normalized = _normalize(value, field)
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[value] = _VALID[normalized] = normalized  # the normal form is its own normal form
    return normalized


def _normalize(value: str, field: str) -> str:
    stripped = value.strip(" \t")
    if not stripped:
        raise InvalidInput(f"{field}: an email address is required", field=field)
    for ch, what in _ADDRESS_FORBIDDEN.items():
        if ch in stripped:
            raise InvalidInput(
                f"{field}: {_show(stripped)} is not a valid email address: it contains {what}",
                field=field,
            )
    bad = _forbidden_char(stripped)
    if bad:
        raise InvalidInput(
            f"{field}: {_show(stripped)} is not a valid email address: it contains {bad}",
            field=field,
        )
    try:
        info = validate_email(
            stripped,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"{field}: {_show(stripped)} is not a valid email address: {exc}", field=field
        ) from exc
    normalized: str = info.normalized
    if len(normalized.encode("utf-8")) > ADDRESS_MAX_LEN:
        raise InvalidInput(
            f"{field}: {_show(stripped)} is not a valid email address: it is longer than "
            f"{ADDRESS_MAX_LEN} bytes",
            field=field,
        )
    return normalized


def _split(address: str) -> tuple[str, str]:
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise InvalidInput(f"{_show(address)} is not an email address: it has no '@domain' part")
    return local, domain


def domain_of(address: str) -> str:
    """Return the address's domain as lower-case ASCII (IDN labels IDNA-encoded, e.g. xn--...).

    Meant for addresses `normalize_address` accepted: it is the key for MX lookup, blocked-domain
    checks and per-destination batching, so two spellings of one domain must give one key.
    """
    _, domain = _split(address.strip())
    domain = domain.rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise InvalidInput(
            f"{_show(address)} has a domain that cannot be encoded for DNS: {exc}"
        ) from exc


def needs_smtputf8(address: str) -> bool:
    """True when the local part is non-ASCII: such an address can only travel with SMTPUTF8.

    A non-ASCII domain alone does not need it: the domain is sent in its IDNA (xn--) form.
    """
    local, _ = _split(address)
    return not local.isascii()


def ascii_form(address: str) -> str:
    """The address with its domain IDNA-encoded; the local part is unchanged."""
    local, _ = _split(address)
    return f"{local}@{domain_of(address)}"


def check_header_text(value: str, *, field: str, max_len: int = 998) -> str:
    """Return `value` without surrounding spaces/tabs, refusing anything that could break a header.

    CR, LF, NUL and other control characters are refused rather than removed: silently editing
    text that may be an injection attempt would hide it. `max_len` counts characters.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected text", field=field)
    stripped = value.strip(" \t")
    bad = _forbidden_char(stripped)
    if bad:
        raise InvalidInput(
            f"{field}: contains {bad}; header fields must be a single line of text", field=field
        )
    if len(stripped) > max_len:
        raise InvalidInput(
            f"{field}: is {len(stripped)} characters long; the limit is {max_len}", field=field
        )
    return stripped


def check_display_name(value: str, *, field: str = "name") -> str:
    """Return a display name fit for a From/To header (may be empty).

    Angle brackets and '@' are refused on top of header-text rules: a name such as
    "ceo@company.com <" renders in many clients as if it were the sender's address.
    """
    name = check_header_text(value, field=field, max_len=DISPLAY_NAME_MAX_LEN)
    # Header phrases fold runs of blanks into one (and decoders trim edge blanks, NBSP included);
    # do the same here so the stored name is the one recipients see.
    name = " ".join(name.split())
    for ch in "<>@":
        if ch in name:
            raise InvalidInput(
                f"{field}: {_show(name)} contains {ch!r}; a display name is a plain name, "
                "not an address",
                field=field,
            )
    return name
