"""A real PostgreSQL server for tests: a fresh database per test on the machine's server.

The server is found from POSTWAY_TEST_POSTGRES_URL, else 127.0.0.1:5432 (user postgres);
`.ci/run` installs and starts one when none answers. Tests fail, not skip, without it, unless
POSTWAY_TEST_SKIP_POSTGRES=1 says so explicitly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("POSTWAY_TEST_POSTGRES_URL", DEFAULT)


def skip_requested() -> bool:
    return os.environ.get("POSTWAY_TEST_SKIP_POSTGRES") == "1"


def _with_db(url: str, name: str) -> str:
    base = url.rsplit("/", 1)[0]
    return f"{base}/{name}"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Create an empty database, yield its plain `postgresql://` URL, drop it afterwards."""
    admin_url = server_url()
    name = f"pw_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield _with_db(admin_url, name)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
