"""`postway serve` as a supervisor: the web app and the delivery worker in their own
processes, a child that dies started again, children gone with the parent, and a child that
cannot start stopping the server with its error."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from served import _env, _seed_in_thread, children_of, served_postway


async def _until(check, seconds: float = 90.0):  # type: ignore[no-untyped-def]
    for _ in range(int(seconds * 10)):
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def _relay_sender(c: httpx.AsyncClient, relay_port: int) -> str:
    r = await c.put(
        "/api/v1/delivery-channel",
        json={
            "channel": "smtp",
            "smtp": {"host": "127.0.0.1", "port": relay_port, "security": "none"},
        },
    )
    assert r.status_code == 200, r.text
    r = await c.post("/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _send(c: httpx.AsyncClient, iid: str, to: str) -> None:
    r = await c.post("/api/v1/messages", json={"identity_id": iid, "to": [to], "text": "hi"})
    assert r.status_code == 202, r.text


async def test_web_and_worker_run_in_their_own_processes_and_a_dead_worker_is_replaced(
    tmp_path: Path, smtp_server
):
    srv = await smtp_server()
    with served_postway(tmp_path, POSTWAY_ALLOW_PRIVATE_RELAYS="true") as served:
        kids = await _until(lambda: (k := served.children()) and len(k) == 2 and k)
        assert set(kids) == {"web", "worker"}
        assert len({served.proc.pid, *kids.values()}) == 3
        async with httpx.AsyncClient(
            base_url=served.base_url, headers={"Authorization": f"Bearer {served.token}"}
        ) as c:
            iid = await _relay_sender(c, srv.port)
            await _send(c, iid, "first@client.example")
            await _until(lambda: len(srv.received) == 1)
            os.kill(kids["worker"], signal.SIGKILL)
            replaced = await _until(
                lambda: (w := served.children().get("worker")) not in (None, kids["worker"]) and w
            )
            assert replaced != kids["worker"]
            await _send(c, iid, "second@client.example")
            await _until(lambda: len(srv.received) == 2)
    assert sorted(t.rcpt_tos[0] for t in srv.received) == [
        "first@client.example",
        "second@client.example",
    ]


async def test_children_end_when_the_supervisor_is_killed(tmp_path: Path):
    with served_postway(tmp_path) as served:
        kids = await _until(lambda: (k := served.children()) and len(k) == 2 and k)
        served.proc.kill()  # SIGKILL: no chance to stop them itself
        served.proc.wait(10)

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in kids.values())

        await _until(gone)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_child_that_cannot_start_stops_the_server_with_its_error(tmp_path: Path):
    data_dir = tmp_path / "data"
    _seed_in_thread(data_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "postway", "serve", "--port", str(port)],
            env=_env(data_dir, {}),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert "web keeps failing at start-up" in proc.stderr
    assert "address already in use" in (proc.stdout + proc.stderr).lower()
    assert children_of(os.getpid()) == {}


async def test_accepted_mail_wakes_the_worker_process_before_its_next_poll(
    tmp_path: Path, smtp_server
):
    srv = await smtp_server()
    # the worker would look at the queue again only in ten minutes: delivery within the
    # test's wait means the web process woke it
    with served_postway(
        tmp_path, POSTWAY_ALLOW_PRIVATE_RELAYS="true", POSTWAY_WORKER_POLL_SECONDS="600"
    ) as served:
        async with httpx.AsyncClient(
            base_url=served.base_url, headers={"Authorization": f"Bearer {served.token}"}
        ) as c:
            iid = await _relay_sender(c, srv.port)
            await asyncio.sleep(1)  # the worker has made its start-up look and is waiting
            for n in (1, 2):
                await _send(c, iid, f"lead{n}@client.example")
                await _until(lambda n=n: len(srv.received) == n)
