"""Our DKIM signer against dkimpy, the oracle: its parse and relaxed canonicalisation give the
same fields and body bytes as ours, `dkim.verify` accepts what we sign, and our b= equals the
signature dkimpy computes itself (its own header hashing, its own pure-Python RSA or PyNaCl
Ed25519: both deterministic) over the same DKIM-Signature tags and timestamp."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import Relaxed
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key
from dkim.util import parse_tag_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postway.mta.dkim import OVERSIGNED, SIGNED_HEADERS, DkimKey, DkimSigner, load_or_create_key
from postway.mta.dkim_canon import relaxed_body, relaxed_field, split_message

NOW = 1_700_000_000

# --- strategies -------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        "To", "Cc", "Subject", "subject", "Date", "Message-ID",
        "Reply-To", "Sender", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
        "In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post",
        "X-Mailer", "Received", "X-Thing", "Keywords",
    ]
)  # fmt: skip
_WSP = st.text(alphabet=" \t", min_size=1, max_size=4).map(str.encode)
_CHUNK = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12).map(
        str.encode
    ),
    _WSP,
    st.binary(min_size=1, max_size=4).map(
        lambda b: bytes(c | 0x80 for c in b)  # 8-bit bytes
    ),
)
_PIECE = st.lists(_CHUNK, max_size=8).map(b"".join)


@st.composite
def _field(draw: st.DrawFn) -> bytes:
    name = draw(_NAMES).encode()
    pieces = draw(st.lists(_PIECE, min_size=1, max_size=3))
    folded = b"".join(
        p if i == 0 else b"\r\n" + draw(_WSP) + p for i, p in enumerate(pieces)
    )  # a folded field: each further line starts with WSP
    return name + draw(st.sampled_from([b":", b": ", b":\t "])) + folded + b"\r\n"


_LINE = st.one_of(
    st.lists(_CHUNK, max_size=10).map(b"".join),
    st.builds(lambda n, c: c * n, st.integers(900, 2000), st.sampled_from([b"x", b" ", b"\xe9"])),
)  # short lines with WSP runs and 8-bit bytes, and long lines


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    # one From (RFC 5322; dkimpy's verify refuses a second one, whatever was signed)
    from_ = draw(st.sampled_from([b"From", b"FROM", b"from"])) + b": A <a@example.com>\r\n"
    fields = [from_, *draw(st.lists(_field(), max_size=10))]
    fields = draw(st.permutations(fields))
    lines = draw(st.lists(_LINE, max_size=8))
    lines += [b""] * draw(st.integers(0, 3))  # trailing empty lines
    ending = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = ending.join(lines)
    if lines and draw(st.booleans()):
        body += ending
    return b"".join(fields) + b"\r\n" + body


# --- the oracle -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["rsa-sha256", "ed25519-sha256"])
def key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return load_or_create_key(
        tmp_path_factory.mktemp("k"), "Mail.Example.COM", "sel", request.param
    )


def _dns(key: DkimKey) -> dict[bytes, bytes]:
    return {f"{key.record_name}.".encode(): key.txt_record_value().encode()}


def dkimpy_signature(key: DkimKey, message: bytes, sig_field: tuple[bytes, bytes]) -> bytes:
    """What dkimpy signs for `message` given our DKIM-Signature field (its b= emptied by
    dkimpy): its parse, relaxed canonicalisation, header selection and hashing, its signer."""
    headers, _ = dkim.rfc822_parse(message)
    tags = parse_tag_value(sig_field[1])
    include = [h.strip().lower() for h in tags[b"h"].split(b":")]
    unsigned = (sig_field[0], dkim.RE_BTAG.sub(b"\\1", sig_field[1]))
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher, Relaxed, Relaxed.canonicalize_headers(headers), include, unsigned, tags
    )
    pk = key.private_key
    if key.algorithm == "rsa-sha256":
        pem = pk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # dkimpy reads RFC 8017 PEM
            serialization.NoEncryption(),
        )
        return bytes(RSASSA_PKCS1_v1_5_sign(hasher, parse_pem_private_key(pem)))
    seed = pk.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return nacl.signing.SigningKey(seed).sign(hasher.digest()).signature


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages())
def test_signature_equals_dkimpys_and_verifies(key: DkimKey, message: bytes) -> None:
    header = DkimSigner(key).signature_header(message, now=NOW)
    signed = header + message
    (sig_field, *_), _ = dkim.rfc822_parse(signed)
    tags = parse_tag_value(sig_field[1])
    headers, body = dkim.rfc822_parse(message)
    # the same tags as ever: h= lists the signed fields present, From once more
    present = {bytes(n).lower().decode() for n, _ in headers}
    names = [n for n in SIGNED_HEADERS if n in present] + [n for n in OVERSIGNED if n in present]
    assert tags[b"h"].decode() == ":".join(names)
    assert (tags[b"a"], tags[b"c"], tags[b"t"]) == (
        key.algorithm.encode(),
        b"relaxed/relaxed",
        str(NOW).encode(),
    )
    assert b"l" not in tags
    assert tags[b"bh"] == base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(body)).digest())
    ours = base64.b64decode(re.sub(rb"\s+", b"", tags[b"b"]))
    assert ours == dkimpy_signature(key, message, sig_field)
    published = _dns(key)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: published.get(name))


# --- the canonicalisation itself, piece by piece -----------------------------------------------

_RAW_LINE = st.lists(
    st.sampled_from([b"a", b"B", b" ", b"\t", b"  \t", b"\r", b":", b"\xe9", b"x:y", b"From "]),
    max_size=8,
).map(b"".join)


@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\xff", b"  "])))
def test_body_canonicalisation_equals_dkimpys(parts: list[bytes]) -> None:
    message = b"From: x\r\n\r\n" + b"".join(parts)
    _, body = split_message(message)
    _, expected = dkim.rfc822_parse(message)
    assert body == expected
    assert relaxed_body(body) == Relaxed.canonicalize_body(expected)


@given(
    st.lists(_RAW_LINE, max_size=8),
    st.sampled_from([b"\r\n", b"\n"]),
    st.sampled_from([b"\r\n", b"\n", b""]),
)
def test_header_parse_and_canonicalisation_equal_dkimpys(
    lines: list[bytes], ending: bytes, blank: bytes
) -> None:
    message = ending.join(lines) + (ending if lines else b"") + blank + b"body\r\n"
    try:
        expected, expected_body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError):  # IndexError: a continuation with no field
        with pytest.raises(ValueError):
            split_message(message)
        return
    fields, body = split_message(message)
    assert body == expected_body
    assert [n for n, _ in fields] == [bytes(n) for n, _ in expected]
    canonical = Relaxed.canonicalize_headers(expected)
    assert [relaxed_field(n, v) for n, v in fields] == [n + b":" + v for n, v in canonical]


def test_empty_body_and_only_empty_lines_hash_as_empty(tmp_path: Path) -> None:
    for body in (b"", b"\r\n", b"\r\n\r\n\r\n", b" \t \r\n\r\n"):
        assert relaxed_body(body) == b""
