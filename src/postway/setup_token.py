"""The one-time link that creates the first administrator from the browser.

When no user exists, `postway serve` (or `postway web`) makes a random token, keeps only its
SHA-256 and expiry in `setup-token.json` in the data folder (0600), and prints the link. The
link works for an hour, once: using it removes the file, so a second use (or a use after
anyone created a user some other way) is refused.
"""

from __future__ import annotations

import hmac
import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from postway.private_files import write_private_file
from postway.security import token_hash
from postway.store.models import utcnow

LIFETIME = timedelta(hours=1)
FILE_NAME = "setup-token.json"


def token_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def issue(data_dir: Path, now: datetime | None = None) -> str:
    """A new setup token (replacing any earlier one); only its hash is written."""
    token = secrets.token_urlsafe(32)
    expires = (now or utcnow()) + LIFETIME
    record = {"sha256": token_hash(token), "expires_at": expires.isoformat()}
    write_private_file(token_file(data_dir), json.dumps(record).encode())
    return token


def is_valid(data_dir: Path, token: str, now: datetime | None = None) -> bool:
    """True while `token` is the current, unused and unexpired setup token."""
    try:
        record = json.loads(token_file(data_dir).read_text())
        expires = datetime.fromisoformat(str(record["expires_at"]))
        expected = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if (now or utcnow()) >= expires:
        return False
    return hmac.compare_digest(token_hash(token), expected)


def consume(data_dir: Path, token: str) -> bool:
    """Use the token up: True for exactly one caller, even when two submit at once (only one
    unlink of the file succeeds)."""
    if not is_valid(data_dir, token):
        return False
    try:
        token_file(data_dir).unlink()
    except FileNotFoundError:
        return False
    return True


def discard(data_dir: Path) -> None:
    """Forget any setup token (a user exists now, so none is needed)."""
    token_file(data_dir).unlink(missing_ok=True)


def link(token: str, configured_base_url: str, host: str, port: int) -> str:
    """The setup page's address: under POSTWAY_BASE_URL when set, else on the address the
    server listens on (loopback when it listens on every address)."""
    if configured_base_url:
        return f"{configured_base_url.rstrip('/')}/setup/{token}"
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/setup/{token}"
