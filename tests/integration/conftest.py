"""Fixtures for tests that run Postway for real: storage on SQLite and PostgreSQL, the
runtime built by the same composition root as production, and an HTTP client on the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from integration_support import Env, make_settings

from peers.postgres import fresh_database, skip_requested
from peers.tls import TLSPeer
from postway.runtime import Runtime
from postway.web.app import create_app


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'postway.db'}"
        return
    if skip_requested():
        pytest.skip("POSTWAY_TEST_SKIP_POSTGRES=1")
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def env(tmp_path: Path, database_url: str, tls_peer: TLSPeer) -> AsyncIterator[Env]:
    rt = Runtime(make_settings(tmp_path, database_url, tls_peer))
    await rt.start()
    app = create_app(rt)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://postway.test") as client:
        yield Env(rt, client)
    await rt.aclose()
