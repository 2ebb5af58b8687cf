"""VERP return paths that name the delivery they belong to, signed so bounces cannot be forged.

    b+<delivery id>-<mac>@<bounce domain>     e.g. b+3f2a...9c-k5q3x7...@bounces.example.com

The delivery id is 32 lowercase hex digits (a UUID's hex); the MAC is the first 80 bits of
HMAC-SHA256 over the id under a key derived from the secret key, in lowercase base32. Every
character is lowercase-safe, so MTAs that case-fold local parts do not break the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

from postway.errors import InvalidInput

PREFIX = "b+"
_MAC_BYTES = 10  # 80 bits: forging one needs ~2^80 tries against a server that rate-limits
_LOCAL_RE = re.compile(r"^b\+([0-9a-f]{32})-([a-z2-7]{16})$")


def _normalise_id(delivery_id: str) -> str:
    try:
        return uuid.UUID(hex=delivery_id).hex
    except ValueError as exc:
        raise InvalidInput(
            f"delivery id {delivery_id!r} is not a UUID (32 hex digits)", field="delivery_id"
        ) from exc


def _mac(delivery_id: str, secret: str) -> str:
    # A key for this one purpose, so a MAC made here is never valid anywhere else.
    key = hmac.new(secret.encode(), b"postway-verp-v1", hashlib.sha256).digest()
    digest = hmac.new(key, delivery_id.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode().lower()


def make_return_path(delivery_id: str, secret: str, domain: str) -> str:
    """The envelope sender for one delivery. Invariant: `parse_return_path` of the result
    (with the same secret and domain, in any letter case) gives back the normalised id."""
    did = _normalise_id(delivery_id)
    return f"{PREFIX}{did}-{_mac(did, secret)}@{domain.lower().rstrip('.')}"


def parse_return_path(address: str, secret: str, domain: str) -> str | None:
    """The delivery id a bounce address names, or None when the address is not ours, is
    malformed or its MAC does not verify (a forgery)."""
    local, at, addr_domain = address.strip().strip("<>").rpartition("@")
    if not at or addr_domain.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    m = _LOCAL_RE.match(local.lower())
    if not m:
        return None
    did, mac = m.groups()
    return did if hmac.compare_digest(mac, _mac(did, secret)) else None
