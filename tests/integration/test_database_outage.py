"""A database that goes away: the API says 503 with Retry-After instead of accepting what it
cannot store (or failing with a 500), and when the database comes back everything works
again without a restart and nothing acknowledged is lost. The PostgreSQL here is one the
test starts itself, on its own port, so it can be stopped."""

from __future__ import annotations

import os
import sys
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


# --- the same under a running `postway serve`, mail posted through HTTP all along ----------
# bench/outage.py holds the scenarios (its rows are in docs/reliability.md); here they run
# with the same code and every figure is checked.

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import outage  # noqa: E402


def _check(r: outage.Result, *, refused: bool) -> None:
    assert r.statuses[202] > 0, r.statuses
    assert set(r.statuses) <= {202, 503}, f"answers other than 202/503: {r.statuses}"
    if refused:
        assert r.statuses[503] > 0, f"the fault never showed: {r.statuses}"
    assert r.no_retry_after == 0
    assert r.transport_errors == 0
    assert r.lost == [], "\n".join(r.lost_detail)
    assert r.duplicated == 0
    assert r.restarted == [], "a process was restarted: recovery must not need one"
    # waited out quietly: a few lines per outage, no traceback per poll or per request
    assert r.tracebacks == 0
    assert r.unavailable_lines <= 12, r.unavailable_lines


@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_postgres_stopped_30_s_under_serve_loses_nothing(tmp_path: Path) -> None:
    r = outage.pg_down(tmp_path, down=30, rate=10)
    _check(r, refused=True)
    assert r.unavailable_lines >= 2  # the web and the worker each said so, once


@pytest.mark.timeout(300)
def test_full_disk_under_sqlite_answers_503_and_recovers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    r = outage.disk_full(tmp_path, down=15, rate=10)
    _check(r, refused=True)


@pytest.mark.timeout(300)
def test_sqlite_write_lock_taken_by_other_processes_is_waited_for(tmp_path: Path) -> None:
    r = outage.locked(tmp_path, down=20, rate=10)
    _check(r, refused=False)
    assert r.locks_taken > 0  # the other processes did hold the lock meanwhile
    assert r.statuses[503] == 0  # a lock held 1.5 s at most is waited out, not refused
