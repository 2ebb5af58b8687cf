"""Passwords, opaque tokens and secrets at rest."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postway.errors import PostwayError

_hasher = PasswordHasher()


class _PasswordStats:
    """How many argon2 verifications ran in this process: lets tests see that every login
    path pays for one, without timing it."""

    verifications = 0


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Argon2 verification; slow on purpose (tens of ms of CPU), so callers run it in a thread
    (`asyncio.to_thread`) and outside any database transaction."""
    _PasswordStats.verifications += 1
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_verifications() -> int:
    return _PasswordStats.verifications


@functools.cache
def dummy_password_hash() -> str:
    """A real argon2 hash of a random password, made once with the same parameters as users'
    hashes: verifying against it for an unknown email costs what a known one costs, so the
    answer's timing does not tell which emails have accounts."""
    return _hasher.hash(secrets.token_urlsafe(32))


def new_token(prefix: str = "pw") -> str:
    """An opaque credential; only its hash is stored, so it is shown to its owner once."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    # Tokens carry 256 bits of entropy, so a fast hash is enough (no need for argon2 here).
    return hashlib.sha256(token.encode()).hexdigest()


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose, so the same secret never serves two uses directly."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )


class SecretBox:
    """Fernet encryption of secrets at rest (relay passwords, OAuth tokens)."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "secrets-at-rest")))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise PostwayError(
                "a stored secret cannot be decrypted: was POSTWAY_SECRET_KEY changed?"
            ) from exc


def sign(secret_key: str, purpose: str, value: str) -> str:
    mac = hmac.new(derive_key(secret_key, purpose), value.encode(), hashlib.sha256)
    return mac.hexdigest()
