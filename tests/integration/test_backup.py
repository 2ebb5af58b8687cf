"""`postway db backup` / `db restore`, run as real subprocesses on SQLite and PostgreSQL.

The main test takes a backup while mail is being accepted through the API, with mail waiting
in the queue (some deferred by a 4xx, some never tried), restores it into a fresh data folder
and database, and lets a real `postway worker` deliver from the restored copy to a loopback
sink: every waiting message arrives once, at or after its original retry time, DKIM-signed
with the original key and with return paths signed by the original secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import dkim
import httpx
import pytest
from integration_support import Env, make_settings
from sqlalchemy import select
from test_cli import cli_env, run
from test_workers import received_ids, start_worker, stop

from peers.postgres import fresh_database
from postway.mta.dkim import KEY_FILES, load_or_create_key
from postway.mta.verp import make_return_path
from postway.runtime import Runtime
from postway.store.backup import copy_sqlite
from postway.store.db import Database
from postway.store.identities import mark_verified
from postway.store.models import Delivery, DeliveryEvent, Message
from postway.web.app import create_app

SENDER = "rep@acme.example"
RETRY = 10.0  # seconds: the deferred mail is still waiting when the restored worker starts
WAITING = ("queued", "deferred")


@contextlib.asynccontextmanager
async def second_database(database_url: str) -> AsyncIterator[str]:
    """Where a restore goes: the data folder's default SQLite file, or a new PostgreSQL db."""
    if database_url.startswith("sqlite"):
        yield ""
        return
    async with fresh_database() as url:
        yield url


def first_database(database_url: str) -> str:
    return "" if database_url.startswith("sqlite") else database_url


async def run_umask0(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`postway ARGS` with umask 0: anything not created private on purpose is world-readable."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "postway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        umask=0,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def waiting_rows(db: Database) -> dict[str, tuple[str, str, datetime | None, int]]:
    """Waiting deliveries: id -> (state, Message-ID header, due_at, attempts)."""
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery.id, Delivery.state, Message.message_id_header, Delivery.due_at,
                   Delivery.attempts)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.state.in_(WAITING))
        )  # fmt: skip
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def message_ids(db: Database) -> set[str]:
    async with db.session() as s:
        return set(await s.scalars(select(Message.id)))


async def test_restore_into_fresh_folder_delivers_what_was_waiting(
    database_url, smtp_server, tls_peer, tmp_path
):
    later = [f"later{i}@slow.example" for i in range(6)]
    sink_a = await smtp_server(rcpt_replies={a: "451 4.7.1 Try again later" for a in later})
    url_a = first_database(database_url)
    settings_a = make_settings(
        tmp_path / "a", url_a, tls_peer,
        secret_key="",  # generated into the data folder, so the backup must carry it
        transport=f"*=127.0.0.1:{sink_a.port}",
        retry_base_seconds=RETRY, retry_max_seconds=RETRY,
    )  # fmt: skip
    rt = Runtime(settings_a)
    await rt.start()
    app = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=app, base_url="http://postway.test") as client:
        acct = await Env(rt, client).account(SENDER, admin=True)
        r = await acct.client.post("/api/v1/identities", json={"name": "Rep", "email": SENDER})
        assert r.status_code == 201, r.text
        identity = r.json()["id"]
        async with rt.db.session() as s, s.begin():
            await mark_verified(s, SENDER)

        async def send(to: str) -> str:
            r = await acct.client.post(
                "/api/v1/messages", json={"identity_id": identity, "to": [to], "text": to}
            )
            assert r.status_code == 202, r.text
            return r.json()["id"]

        # delivered before the backup (must not go again), and deferred by the 451
        sent_early = [await send(f"done{i}@fast.example") for i in range(3)]
        deferred = [await send(a) for a in later]
        while await rt.worker.run_once():
            pass
        assert len(sink_a.received) == 3
        before = [await send(f"queued{i}@fresh.example") for i in range(5)]  # never tried

        # a backup taken while the API keeps accepting mail
        accepted_during: list[str] = []
        stop_writing = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop_writing.is_set():
                accepted_during.append(await send(f"during{i}@fresh.example"))
                i += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(writer())
        env_a = cli_env(tmp_path / "a", url_a, POSTWAY_SECRET_KEY="")
        backup_file = tmp_path / "backups" / "postway-backup.tar.gz"
        backup_file.parent.mkdir()
        await asyncio.sleep(0.1)
        started_with = len(accepted_during)
        r = await run(env_a, "db", "backup", str(backup_file))
        written_during = len(accepted_during) - started_with
        stop_writing.set()
        await task
        assert r.returncode == 0, r.stderr
        assert written_during > 0  # the API really was writing while the backup ran
        rows_a = await waiting_rows(rt.db)
        messages_a = await message_ids(rt.db)
    await rt.aclose()
    assert mode(backup_file) == 0o600

    data_a, data_b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    async with second_database(database_url) as url_b:
        env_b = cli_env(tmp_path / "b", url_b, POSTWAY_SECRET_KEY="")
        r = await run(env_b, "db", "restore", str(backup_file))
        assert r.returncode == 0, r.stderr
        for name in ("secret.key", KEY_FILES["rsa-sha256"]):
            assert (data_b / name).read_bytes() == (data_a / name).read_bytes()
            assert mode(data_b / name) == 0o600

        db_b = Database(settings_a.model_copy(
            update={"data_dir": data_b, "database_url": url_b}
        ).resolved_database_url())  # fmt: skip
        try:
            rows_b = await waiting_rows(db_b)
            messages_b = await message_ids(db_b)
            # a consistent snapshot: all accepted before it began, nothing that never existed
            assert (
                set(deferred) | set(before) | set(sent_early) | set(accepted_during[:started_with])
                <= messages_b
                <= messages_a
            )
            # the waiting mail kept its state, retry time and attempts
            assert rows_b, "nothing waiting in the restore"
            for did, row in rows_b.items():
                assert rows_a[did] == row, did
            assert sum(1 for st, *_ in rows_b.values() if st == "deferred") == len(deferred)

            sink_b = await smtp_server()
            wenv = cli_env(
                tmp_path / "b", url_b,
                POSTWAY_SECRET_KEY="",
                POSTWAY_TRANSPORT=f"*=127.0.0.1:{sink_b.port}",
                POSTWAY_WORKER_POLL_SECONDS="0.1",
                POSTWAY_LOG_LEVEL="WARNING",
            )  # fmt: skip
            worker = start_worker(wenv)
            try:
                for _ in range(int((RETRY + 60) * 5)):
                    if not await waiting_rows(db_b):
                        break
                    await asyncio.sleep(0.2)
            finally:
                stop(worker)
            assert not await waiting_rows(db_b), worker.stderr.read().decode()[-2000:]

            # every waiting message arrived exactly once, and nothing else
            counts = received_ids(sink_b)
            assert set(counts) == {mid for _, mid, _, _ in rows_b.values()}
            assert max(counts.values()) == 1, counts.most_common(3)
            # no deferred delivery was tried before its restored retry time
            async with db_b.session() as s:
                tried = {
                    e.delivery_id: e.created_at
                    for e in await s.scalars(
                        select(DeliveryEvent).where(DeliveryEvent.delivery_id.in_(list(rows_b)))
                    )
                    if e.state == "delivered"
                }
            for did, (state, _, due_at, _) in rows_b.items():
                assert tried[did] >= due_at, (state, tried[did], due_at)
        finally:
            await db_b.dispose()

    # signed with the original DKIM key; return paths signed with the original secret
    key = load_or_create_key(data_a, settings_a.bounce_domain, settings_a.dkim_selector)
    published = {f"{key.record_name}.".encode(): key.txt_record_value().encode()}
    secret_a = (data_a / "secret.key").read_text().strip()
    for got in sink_b.received:
        assert dkim.verify(got.data, dnsfunc=lambda name, timeout=5: published.get(name))
    verp = {make_return_path(did, secret_a, settings_a.bounce_domain) for did in rows_b}
    assert {got.mail_from for got in sink_b.received} == verp


async def test_backup_refuses_to_overwrite_and_restore_refuses_data(database_url, tmp_path):
    url = first_database(database_url)
    env = cli_env(tmp_path, url, POSTWAY_SECRET_KEY="")
    assert (await run(env, "db", "upgrade")).returncode == 0
    assert (
        await run(env, "user", "create", "a@acme.example", stdin="password123\n")
    ).returncode == 0
    target = tmp_path / "b.tar.gz"
    target.write_text("an older backup")
    target.chmod(0o644)
    r = await run(env, "db", "backup", str(target))
    assert r.returncode == 1 and "exists" in r.stderr and "--force" in r.stderr
    assert target.read_text() == "an older backup"
    r = await run(env, "db", "backup", str(tmp_path / "nowhere" / "b.tar.gz"))
    assert r.returncode == 1 and "no folder" in r.stderr
    r = await run(env, "db", "backup", str(tmp_path))
    assert r.returncode == 1 and "is a folder" in r.stderr
    r = await run(env, "db", "backup", "--force", str(target))
    assert r.returncode == 0, r.stderr
    assert mode(target) == 0o600
    with tarfile.open(target) as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json" and names[-1] == (
            "postgres.dump" if url else "postway.db"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "data"]  # no leftovers

    # the data folder it came from is not empty: restoring over it needs --force
    r = await run(env, "db", "restore", str(target))
    assert r.returncode == 1 and "already holds data" in r.stderr and "users" in r.stderr
    async with second_database(database_url) as url_o:
        other = cli_env(tmp_path / "other", url_o, POSTWAY_SECRET_KEY="")
        assert (await run(other, "db", "upgrade")).returncode == 0  # migrated, no rows: empty
        r = await run(other, "db", "restore", str(target))
        assert r.returncode == 1 and "other secret.key" in r.stderr  # its own key differs
        r = await run(other, "db", "restore", "--force", str(target))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "other" / "data" / "secret.key").read_bytes() == (
            tmp_path / "data" / "secret.key"
        ).read_bytes()
        r = await run(other, "user", "create", "a@acme.example", stdin="password123\n")
        assert r.returncode == 1 and "already exists" in r.stderr  # the restored user is there

    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"not a backup")
    r = await run(cli_env(tmp_path / "third", url), "db", "restore", str(fake))
    assert r.returncode == 1 and "failed" in r.stderr


async def test_backup_and_restored_files_are_private_under_umask_0(database_url, tmp_path):
    url = first_database(database_url)
    env = cli_env(tmp_path / "a", url, POSTWAY_SECRET_KEY="")
    assert (await run(env, "db", "upgrade")).returncode == 0
    assert (await run(env, "dkim", "show")).returncode == 0
    target = tmp_path / "b.tar.gz"
    r = await run_umask0(env, "db", "backup", str(target))
    assert r.returncode == 0, r.stderr
    assert mode(target) == 0o600
    with tarfile.open(target) as tar:
        assert {m.mode for m in tar.getmembers()} == {0o600}
        assert {"keys/secret.key", f"keys/{KEY_FILES['rsa-sha256']}"} <= set(tar.getnames())
    async with second_database(database_url) as url_b:
        env_b = cli_env(tmp_path / "b", url_b, POSTWAY_SECRET_KEY="")
        r = await run_umask0(env_b, "db", "restore", str(target))
        assert r.returncode == 0, r.stderr
    data_b = tmp_path / "b" / "data"
    assert mode(data_b) == 0o700
    private = ["secret.key", KEY_FILES["rsa-sha256"]] + (["postway.db"] if not url else [])
    for name in private:
        assert mode(data_b / name) == 0o600, name
    assert sorted(p.name for p in data_b.iterdir() if p.name.startswith(".")) == []


@pytest.mark.postgres
async def test_postgres_tool_errors_are_clear_and_leak_no_password(tmp_path):
    async with fresh_database() as url:
        env = cli_env(tmp_path, url)
        assert (await run(env, "db", "upgrade")).returncode == 0
        target = tmp_path / "b.tar.gz"
        r = await run({**env, "PATH": str(tmp_path / "empty-bin")}, "db", "backup", str(target))
        assert r.returncode == 1 and "pg_dump was not found on PATH" in r.stderr
        assert not target.exists() and list(tmp_path.iterdir()) == []  # no temporary left

        assert (await run(env, "db", "backup", str(target))).returncode == 0
        async with fresh_database() as url_b:
            env_b = {**cli_env(tmp_path / "b", url_b), "PATH": str(tmp_path / "empty-bin")}
            r = await run(env_b, "db", "restore", str(target))
            assert r.returncode == 1 and "pg_restore was not found on PATH" in r.stderr

    password = "Tr0ub4dor-and-3"
    base, _ = url.rsplit("/", 1)
    scheme, rest = base.split("://", 1)
    user, host = rest.split("@", 1)
    missing = f"{scheme}://{user}:{password}@{host}/pw_no_such_database"
    r = await run(cli_env(tmp_path, missing), "db", "backup", str(tmp_path / "c.tar.gz"))
    assert r.returncode == 1
    assert "pg_dump failed" in r.stderr and "pw_no_such_database" in r.stderr
    assert "does not exist" in r.stderr  # pg_dump's own words
    assert password not in r.stderr + r.stdout


def test_sqlite_copy_keeps_one_snapshot_while_another_connection_writes(tmp_path):
    """Writes between the copy's steps neither restart it nor get into it."""
    source = tmp_path / "live.db"
    con = sqlite3.connect(source, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 4000)
    con.execute("COMMIT")
    steps: list[tuple[int, int]] = []

    def write_between_steps(what: str, done: int, total: int) -> None:
        steps.append((done, total))
        if len(steps) <= 10:  # bounded: a copy that restarts on each write ends too, and fails
            con.execute("INSERT INTO t VALUES ('written during the copy')")

    pages = copy_sqlite(source, tmp_path / "copy.db", 25, write_between_steps, standalone=True)
    assert steps[-1] == (pages, pages)
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)  # never started over
    assert len(steps) == math.ceil(pages / 25)
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 4000
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 4000 + 10
    assert mode(tmp_path / "copy.db") == 0o600
    assert not os.path.exists(tmp_path / "copy.db-wal")
