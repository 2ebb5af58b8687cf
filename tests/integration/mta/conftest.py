"""The `managed` fixture: the managed channel pointed at the DNS peer and loopback MX servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mta_support import BOUNCE_DOMAIN, settings_for

from postway.channels.managed import ManagedChannel
from postway.config import Settings
from postway.mta.dkim import DkimSigner, load_or_create_key
from postway.mta.resolver import Resolver
from postway.mta.smtp_client import Timeouts
from postway.mta.transport import parse_transport


@pytest.fixture(scope="session")
def rsa_signer(tmp_path_factory: pytest.TempPathFactory) -> DkimSigner:
    """One RSA key for the run: generating a 2048-bit key costs ~0.3 s."""
    key = load_or_create_key(tmp_path_factory.mktemp("dkim"), BOUNCE_DOMAIN, "postway")
    return DkimSigner(key)


@pytest.fixture
async def managed(
    tmp_path: Path, dns_peer: Any, rsa_signer: DkimSigner
) -> AsyncIterator[Callable[..., ManagedChannel]]:
    """Factory: managed(port=SMTP port for MX hosts, timeout=..., **channel kwargs)."""
    made: list[ManagedChannel] = []

    def make(
        port: int = 25, timeout: float = 5.0, settings: Settings | None = None, **kw: Any
    ) -> ManagedChannel:
        s = settings or settings_for(tmp_path, dns_peer)
        resolver = Resolver(
            s.dns_nameservers, parse_transport(s.transport), timeout=1.0, lifetime=1.5,
            mx_port=port, allow_private=s.allow_private_relays,
        )  # fmt: skip
        if s.dkim_algorithm == "rsa-sha256":
            kw.setdefault("signer", rsa_signer)
        ch = ManagedChannel(s, resolver=resolver, timeouts=Timeouts.scaled(timeout), **kw)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        await ch.aclose()
