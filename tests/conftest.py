"""Shared fixtures.

Peers (real servers on loopback) are built in tests/peers/ and imported as `peers.*` (pytest puts
tests/ on sys.path for this conftest); here they are only started, handed to tests and stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peers.dns import DNSPeer
from peers.smtp import ScriptedSMTPServer
from peers.tls import TLSPeer

# -- peers --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_peer(tmp_path_factory: pytest.TempPathFactory) -> TLSPeer:
    """A test CA and a certificate for localhost/127.0.0.1/::1 (one per test run)."""
    return TLSPeer.create(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def dns_peer() -> Iterator[DNSPeer]:
    """A DNS server on loopback with an empty zone; point Settings.dns_nameservers at
    `dns_peer.nameserver`."""
    with DNSPeer() as peer:
        yield peer


@pytest.fixture
async def smtp_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory for scripted SMTP servers, stopped at teardown:

    srv = await smtp_server(rcpt_replies={...})
    """
    started: list[ScriptedSMTPServer] = []

    async def make(**kwargs: Any) -> ScriptedSMTPServer:
        srv = ScriptedSMTPServer(**kwargs)
        await srv.__aenter__()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        await srv.__aexit__(None, None, None)
