from __future__ import annotations

import stat

import dkim
import pytest

from postway.mta.dkim import DkimSigner, load_or_create_key

MSG = (
    b"From: A <a@example.com>\r\nTo: b@example.org\r\nSubject:  folded\r\n  subject \r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\n"
    b"Body  with   spaces \r\n.dot\r\n\r\n\r\n"
)


@pytest.mark.parametrize("alg", ["rsa-sha256", "ed25519-sha256"])
def test_signature_verifies_with_dkimpy(tmp_path, alg):
    key = load_or_create_key(tmp_path, "Bounces.Example.COM", "pw", alg)
    signed = DkimSigner(key).sign(MSG)
    assert signed.endswith(MSG)
    published = {f"{key.record_name}.".encode(): key.txt_record_value().encode()}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: published.get(name))
    tampered = signed.replace(b"Body", b"B0dy")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: published.get(name))
    added_from = b"From: evil@example.net\r\n" + signed  # over-signed From catches this
    assert not dkim.verify(added_from, dnsfunc=lambda name, timeout=5: published.get(name))


def test_key_file_made_once_private(tmp_path):
    k1 = load_or_create_key(tmp_path, "d.example", "s")
    path = tmp_path / "dkim_private_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    k2 = load_or_create_key(tmp_path, "d.example", "s")
    assert k1.txt_record_value() == k2.txt_record_value()
    assert k1.private_key.key_size == 2048
    rec = k1.dns_record()
    assert rec.startswith('s._domainkey.d.example. IN TXT "v=DKIM1; k=rsa; p=')
    assert all(len(part) <= 257 for part in rec.split(" TXT ")[1].split(" "))
