"""Fixtures for the Gmail channel: the Google stand-in on loopback and a Postway runtime
(SQLite and PostgreSQL) whose Google endpoints point at it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from peers.google import GooglePeer
from peers.tls import TLSPeer
from postway.google_standin import Alias
from postway.runtime import Runtime
from postway.web.app import create_app

ALIAS = "sales@acme.example"


def _integration_conftest():  # type: ignore[no-untyped-def]
    """tests/integration/conftest.py as a module of its own name: this file is also named
    `conftest`, so a plain import would find itself."""
    name = "integration_conftest"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_base = _integration_conftest()
Env, make_settings = _base.Env, _base.make_settings


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
