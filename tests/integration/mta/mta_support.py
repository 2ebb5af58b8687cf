"""Helpers for the managed-channel tests (a plain module: `conftest` names clash across folders)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.resolver

from postway.channels.base import OutboundMessage, Recipient
from postway.config import Settings

SECRET = "test-secret-key"
BOUNCE_DOMAIN = "bounces.postway.test"

RAW = (
    b"From: Rep <rep@seller.example>\r\n"
    b"To: buyer@example.org\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <m1@postway.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello,\r\n.leading dot stays\r\n\r\nBye  \r\n"
)


def message(*addresses: str, raw: bytes = RAW, smtputf8: bool = False) -> OutboundMessage:
    return OutboundMessage(
        message_id="m1",
        org_id="o1",
        user_id="u1",
        from_address="rep@seller.example",
        raw=raw,
        recipients=tuple(Recipient(uuid.uuid4().hex, a) for a in addresses),
        needs_smtputf8=smtputf8,
    )


def settings_for(tmp_path: Path, dns_peer: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=tmp_path,
        secret_key=SECRET,
        hostname="postway.test",
        bounce_domain=BOUNCE_DOMAIN,
        dns_nameservers=dns_peer.nameserver,
        # The DNS peer points MX hosts at loopback sinks: internal servers, allowed on purpose
        # (test_mx_ssrf.py turns this off to see them refused).
        allow_private_relays=True,
    )
    values.update(overrides)
    return Settings(**values)


def dnsfunc_for(dns_peer: Any) -> Callable[..., bytes]:
    """dkimpy's DNS hook, answered by the DNS peer over the wire."""

    def get_txt(name: bytes, timeout: float = 5) -> bytes:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns_peer.host]
        r.port = dns_peer.port
        answer = r.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return get_txt
