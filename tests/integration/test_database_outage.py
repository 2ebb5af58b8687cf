"""A database that goes away: the API says 503 with Retry-After instead of accepting what it
cannot store (or failing with a 500), and when the database comes back everything works
again without a restart and nothing acknowledged is lost. The PostgreSQL here is one the
test starts itself, on its own port, so it can be stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration_support import Env, make_settings

from peers.smtp import free_port
from peers.tls import TLSPeer
from postway.runtime import Runtime
from postway.web.app import create_app


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL's server programs are missing (scripts/test.sh installs them)")
    return found[-1].parent


class OwnPostgres:
    """A PostgreSQL server of the test's own, run as the `postgres` user (it refuses root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="pw-own-pg-"))
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, program: str, *args: str) -> None:
        cmd = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"),
            "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(pg.bin / "pg_ctl"), "-D",
             str(pg.dir / "data"), "-m", "immediate", "stop"],
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(pg.dir, ignore_errors=True)


async def test_api_says_503_while_the_database_is_away_and_recovers_without_a_restart(
    tmp_path: Path, tls_peer: TLSPeer, smtp_server, own_postgres: OwnPostgres
):
    srv = await smtp_server()
    rt = Runtime(make_settings(tmp_path, own_postgres.url(), tls_peer))
    await rt.start()
    transport = httpx.ASGITransport(app=create_app(rt))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://postway.test") as c:
            env = Env(rt, c)
            rep, iid = await env.relay_sender(srv.port, "rep@acme.example")

            async def send(to: str) -> httpx.Response:
                return await rep.client.post(
                    "/api/v1/messages", json={"identity_id": iid, "to": [to], "text": "hi"}
                )

            accepted = []
            for n in range(3):
                r = await send(f"before{n}@client.example")
                assert r.status_code == 202, r.text
                accepted.append(r.json()["deliveries"][0]["recipient"])

            own_postgres.stop()
            # a send (token and identity known to the process), a read, and an unknown token
            r = await send("during@client.example")
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5"
            assert "database is not available" in r.json()["error"]
            r = await rep.client.get("/api/v1/messages")
            assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
            r = await c.get("/api/v1/identities", headers={"Authorization": "Bearer pw_unknown"})
            assert r.status_code == 503, r.text

            own_postgres.start()  # back, same process: the pool reconnects
            r = await send("after@client.example")
            assert r.status_code == 202, r.text
            accepted.append(r.json()["deliveries"][0]["recipient"])
            listed = (await rep.client.get("/api/v1/messages")).json()
            assert listed["total"] == 4  # the refused send was not stored
            await env.drain()
        assert sorted(r for t in srv.received for r in t.rcpt_tos) == sorted(accepted)
    finally:
        await rt.aclose()
