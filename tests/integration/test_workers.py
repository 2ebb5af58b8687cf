"""Real `postway worker` processes sharing one queue: exactly-once claims, and SIGKILL survival.

The managed channel delivers through POSTWAY_TRANSPORT to an SMTP sink on loopback.
"""

from __future__ import annotations

import asyncio
import email
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select
from test_cli import cli_env, run

from postway.delivery.submit import SendRequest, submit_message
from postway.store.identities import create_identity, mark_verified
from postway.store.models import Delivery
from postway.store.users import create_user, principal_of


def worker_env(env, tmp_path: Path, sink_port: int, **extra: str) -> dict[str, str]:
    s = env.rt.settings
    return cli_env(
        tmp_path,
        s.database_url,
        POSTWAY_SECRET_KEY=s.secret_key,
        POSTWAY_DATA_DIR=str(s.data_dir),
        POSTWAY_TRANSPORT=f"*=127.0.0.1:{sink_port}",
        POSTWAY_WORKER_POLL_SECONDS="0.1",
        POSTWAY_LEASE_SECONDS="3",
        POSTWAY_RETRY_BASE_SECONDS="0.2",
        POSTWAY_RETRY_MAX_SECONDS="0.5",
        POSTWAY_SMTP_COMMAND_TIMEOUT="20",
        POSTWAY_LOG_LEVEL="WARNING",
        **extra,
    )


def start_worker(wenv: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "worker"],
        env=wenv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_web(wenv: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "web", "--port", str(port)],
        env=wenv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def accept(env, n: int) -> list[str]:
    """Accept n single-recipient messages on the managed channel; returns their Message-IDs."""
    async with env.rt.db.session() as s, s.begin():
        who = principal_of(await create_user(s, "rep@acme.example", "password123"))
        ident = await create_identity(s, who, name="Rep", email="rep@acme.example")
        await mark_verified(s, "rep@acme.example")
    ids = []
    for i in range(n):
        async with env.rt.db.session() as s, s.begin():
            m, _ = await submit_message(
                s,
                env.rt.settings,
                who,
                SendRequest(identity_id=ident.id, to=[f"lead{i}@d{i % 7}.example"], text=f"n{i}"),
            )
            ids.append(m.message_id_header)
    return ids


async def delivered_count(env) -> int:
    async with env.rt.db.session() as s:
        return await s.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.state == "delivered")
        )


async def wait_all_delivered(env, n: int, seconds: float) -> int:
    got = 0
    for _ in range(int(seconds * 5)):
        got = await delivered_count(env)
        if got == n:
            break
        await asyncio.sleep(0.2)
    return got


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def received_ids(srv) -> Counter[str]:
    return Counter(
        str(email.message_from_bytes(t.data)["Message-ID"]).strip() for t in srv.received
    )


async def test_two_workers_deliver_each_recipient_exactly_once(env, smtp_server, tmp_path):
    srv = await smtp_server()
    wenv = worker_env(env, tmp_path, srv.port)
    assert (await run(wenv, "dkim", "show")).returncode == 0  # key made once, before workers
    ids = await accept(env, 120)
    workers = [start_worker(wenv), start_worker(wenv)]
    try:
        got = await wait_all_delivered(env, 120, 90)
    finally:
        stop(*workers)
    assert got == 120, [w.stderr.read().decode()[-2000:] for w in workers if w.stderr]
    counts = received_ids(srv)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, counts.most_common(3)
    # both workers took part (each claims a batch of up to 100)
    assert srv.sessions_opened >= 2


async def test_sigkilled_worker_loses_nothing(env, smtp_server, tmp_path):
    # the sink is slow after the final dot, so the first worker dies with mail in flight
    srv = await smtp_server(stall={"dot": 0.5})
    wenv = worker_env(env, tmp_path, srv.port)
    assert (await run(wenv, "dkim", "show")).returncode == 0
    ids = await accept(env, 40)
    first = start_worker(wenv)
    for _ in range(100):
        if srv.transactions:
            break
        await asyncio.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    before = await delivered_count(env)
    assert before < 40  # it really died mid-run
    srv.stall = {}
    second = start_worker(wenv)
    try:
        got = await wait_all_delivered(env, 40, 60)
    finally:
        stop(second)
    assert got == 40
    counts = received_ids(srv)
    assert set(ids) <= set(counts)  # every accepted message arrived at least once
    # duplicates are only possible for what was in flight when the worker died
    assert sum(counts.values()) - len(ids) <= 40 - before


async def test_killed_web_process_keeps_accepted_mail(env, smtp_server, tmp_path):
    srv = await smtp_server()
    wenv = worker_env(env, tmp_path, srv.port)
    async with env.rt.db.session() as s, s.begin():
        who = await create_user(s, "rep@acme.example", "password123")
        await create_identity(s, principal_of(who), name="Rep", email="rep@acme.example")
        await mark_verified(s, "rep@acme.example")
    token = (await run(wenv, "token", "create", "rep@acme.example")).stdout.strip().splitlines()[-1]
    from peers.smtp import free_port

    port = free_port()
    web = start_web(wenv, port)
    import httpx

    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for _ in range(100):
                try:
                    r = await c.get("/api/v1/identities")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            iid = r.json()[0]["id"]
            r = await c.post(
                "/api/v1/messages",
                json={
                    "identity_id": iid,
                    "to": ["a@client.example", "b@client.example"],
                    "text": "x",
                },
            )
            assert r.status_code == 202
        os.kill(web.pid, signal.SIGKILL)  # right after the 202
    finally:
        web.wait(timeout=10)
    worker = start_worker(wenv)
    try:
        got = await wait_all_delivered(env, 2, 30)
    finally:
        stop(worker)
    assert got == 2
    assert sorted(r for t in srv.received for r in t.rcpt_tos) == [
        "a@client.example",
        "b@client.example",
    ]
