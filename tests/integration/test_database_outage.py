"""A database that goes away: the API says 503 with Retry-After instead of accepting what it
cannot store (or failing with a 500), and when the database comes back everything works
again without a restart and nothing acknowledged is lost. The PostgreSQL here is one the
test starts itself, on its own port, so it can be stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration_support import Env, make_settings

from peers.own_postgres import OwnPostgres
from peers.tls import TLSPeer
from postway.runtime import Runtime
from postway.web.app import create_app


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.remove()


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
