"""DKIM signing (RFC 6376; ed25519 per RFC 8463) with `cryptography`'s native RSA/Ed25519.

Relaxed/relaxed only, canonicalised by `dkim_canon` with bytes operations. dkimpy is the
tests' oracle (its verify and its own canonicalisation and signature), not used here: its
regex-per-field canonicalisation cost ~150 us a message, its pure-Python RSA ~12 ms.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from postway.errors import InvalidInput
from postway.mta.dkim_canon import body_hash, relaxed_field, relaxed_value, split_message
from postway.private_files import create_private_file

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
KEY_FILES = {"rsa-sha256": "dkim_private_key.pem", "ed25519-sha256": "dkim_ed25519_private_key.pem"}

# Headers signed when present. "from" is signed once more than it occurs (over-signing), so a
# second From added in transit breaks the signature instead of being shown to the reader.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to", "references",
    "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
OVERSIGNED = ("from",)

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    private_key: PrivateKey

    def txt_record_value(self) -> str:
        """The TXT value to publish: `v=DKIM1; k=rsa; p=...`."""
        pub = self.private_key.public_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The zone-file line to publish, with the value split into 255-octet strings."""
        value = self.txt_record_value()
        parts = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        return f"{self.record_name}. IN TXT {parts}"


def load_or_create_key(
    data_dir: Path, domain: str, selector: str, algorithm: str = "rsa-sha256"
) -> DkimKey:
    """The signing key from the data dir, generated there (mode 0600) on first use.

    RSA keys are 2048-bit. The file is linked into place whole (`create_private_file`), so
    two processes starting at once cannot both write a key: the loser reads the winner's.
    """
    if algorithm not in ALGORITHMS:
        raise InvalidInput(
            f"DKIM algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}",
            field="dkim_algorithm",
        )
    path = Path(data_dir) / KEY_FILES[algorithm]
    if not path.exists():
        key: PrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if algorithm == "rsa-sha256"
            else ed25519.Ed25519PrivateKey.generate()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_private_file(path, pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise InvalidInput(f"{path} holds neither an RSA nor an Ed25519 key", "dkim_algorithm")
    return DkimKey(domain.lower(), selector, algorithm, loaded)


def _select(fields: list[tuple[bytes, bytes]], names: list[str]) -> list[tuple[bytes, bytes]]:
    """Fields in h= order; a name listed twice takes the next instance up from the bottom
    (RFC 6376 5.4.2). Names with no instance left contribute nothing."""
    by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for name, value in fields:
        by_name.setdefault(name.lower(), []).append((name, value))
    picked = []
    for n in names:
        stack = by_name.get(n.encode())
        if stack:
            picked.append(stack.pop())
    return picked


def _fold_b64(sig: str, width: int = 72) -> str:
    return "\r\n\t".join(sig[i : i + width] for i in range(0, len(sig), width))


class DkimSigner:
    """Signs messages with one key, relaxed/relaxed. Thread-safe and stateless per call.

    Canonicalisation is `dkim_canon` (bytes operations); the body is hashed once per message
    and the key is the one loaded when the signer was made (once per channel, so per process).
    """

    def __init__(self, key: DkimKey) -> None:
        self.key = key
        self._head = f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector};"

    def signature_header(self, message: bytes, now: int | None = None) -> bytes:
        """The `DKIM-Signature: ...\\r\\n` header line to put in front of `message`."""
        fields, body = split_message(message)
        bh = base64.b64encode(body_hash(body)).decode()
        present = {name.lower().decode("ascii") for name, _ in fields}
        names = [n for n in SIGNED_HEADERS if n in present]
        names += [n for n in OVERSIGNED if n in present]
        t = int(time.time()) if now is None else now
        value = f"{self._head}\r\n\tt={t}; h={':'.join(names)}; bh={bh};\r\n\tb="
        data = b"".join([relaxed_field(n, v) for n, v in _select(fields, names)])
        # the signature field itself is hashed last, unfolded, b= empty and without its CRLF
        data += b"dkim-signature:" + relaxed_value(value.replace("\r\n", "").encode())
        key = self.key.private_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw_sig = key.sign(hashlib.sha256(data).digest())  # RFC 8463: over the SHA-256
        else:
            raw_sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        b = base64.b64encode(raw_sig).decode()
        return f"DKIM-Signature: {value}{_fold_b64(b)}\r\n".encode()

    def sign(self, message: bytes, now: int | None = None) -> bytes:
        """`message` with a DKIM-Signature header in front; the message itself is unchanged."""
        return self.signature_header(message, now) + message
