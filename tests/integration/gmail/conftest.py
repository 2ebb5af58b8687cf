"""Fixtures for the Gmail channel: the Google stand-in on loopback and a Postway runtime
(SQLite and PostgreSQL) whose Google endpoints point at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from integration_support import Env, make_settings

from peers.google import GooglePeer
from peers.tls import TLSPeer
from postway.google_standin import Alias
from postway.runtime import Runtime
from postway.web.app import create_app

ALIAS = "sales@acme.example"




@pytest.fixture
def google() -> Iterator[GooglePeer]:
    """The stand-in, approving consent at once, with rep@gmail.test and its verified alias
    sales@acme.example."""
    with GooglePeer(aliases=(Alias(ALIAS, "Sales"),), auto_approve=True) as peer:
        yield peer


def gmail_settings(tmp_path: Path, database_url: str, tls_peer: TLSPeer, google: GooglePeer):
    return make_settings(
        tmp_path,
        database_url,
        tls_peer,
        google_base_url=google.base_url,
        google_client_id=google.client_id,
        google_client_secret=google.client_secret,
    )


@pytest.fixture
async def genv(
    tmp_path: Path, database_url: str, tls_peer: TLSPeer, google: GooglePeer
) -> AsyncIterator[Env]:
    rt = Runtime(gmail_settings(tmp_path, database_url, tls_peer, google))
    await rt.start()
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://postway.test") as client:
        yield Env(rt, client)
    await rt.aclose()
