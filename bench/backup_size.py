"""`postway db backup` and `db restore` with N messages waiting: time, CPU and size.

    .venv/bin/python bench/backup_size.py [--messages 10000] [--systems sqlite,postgres]

A fresh data folder (and, for postgres, a fresh database) is filled through the real submit
path (~2 KB one-recipient text messages, 500 per transaction, all queued), then
`postway db backup` runs as a subprocess and `postway db restore` restores it into another
fresh folder and database. Printed: database size, backup file size, wall time and CPU time
(user + system of the child, incl. pg_dump/pg_restore) of each command. Wall times are
skewed by anything else running on the machine; CPU times much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PG_SERVER = os.environ.get(
    "POSTWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BODY = ("Hello, this is a follow-up about our meeting. " * 44)[:2000]


async def fill(data_dir: Path, url: str, n: int) -> int:
    """Queue n messages as one user; returns the database size in bytes."""
    from postway.config import Settings
    from postway.delivery.submit import SendRequest, submit_message
    from postway.runtime import Runtime
    from postway.store.identities import create_identity, mark_verified
    from postway.store.users import create_user, principal_of

    rt = Runtime(Settings(data_dir=data_dir, database_url=url, secret_key=""))
    await rt.start()
    try:
        async with rt.db.session() as s, s.begin():
            who = principal_of(await create_user(s, "rep@acme.example", "password123"))
            ident = await create_identity(s, who, name="Rep", email="rep@acme.example")
            await mark_verified(s, "rep@acme.example")
        for start in range(0, n, 500):
            async with rt.db.session() as s, s.begin():
                for i in range(start, min(n, start + 500)):
                    req = SendRequest(
                        identity_id=ident.id, to=[f"lead{i}@d{i % 50}.example"],
                        subject=f"Follow-up {i}", text=BODY,
                    )  # fmt: skip
                    await submit_message(s, rt.settings, who, req)
        rt.registry.managed()  # makes the DKIM key, as the first managed delivery would
    finally:
        await rt.aclose()
    if not url:
        return sqlite_size(data_dir)
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def sqlite_size(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("postway.db*"))


def timed(env: dict[str, str], *args: str) -> tuple[float, float]:
    """Run `postway ARGS`; wall seconds and the child's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "postway", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"postway {' '.join(args)} failed: {r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


async def create_db(name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_SERVER)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG_SERVER.rsplit('/', 1)[0]}/{name}"


async def drop_db(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_SERVER)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(kind: str, n: int) -> dict[str, str]:
    names = [f"pw_bkbench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        urls = ["", ""] if kind == "sqlite" else [asyncio.run(create_db(x)) for x in names]
        try:
            db_size = asyncio.run(fill(root / "a", urls[0], n))
            base = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
            env_a = {**base, "POSTWAY_DATA_DIR": str(root / "a"), "POSTWAY_DATABASE_URL": urls[0]}
            env_b = {**base, "POSTWAY_DATA_DIR": str(root / "b"), "POSTWAY_DATABASE_URL": urls[1]}
            target = root / "backup.tar.gz"
            b_wall, b_cpu = timed(env_a, "db", "backup", str(target))
            size = target.stat().st_size
            r_wall, r_cpu = timed(env_b, "db", "restore", str(target))
        finally:
            if kind == "postgres":
                for x in names:
                    asyncio.run(drop_db(x))
    return {
        "database": kind,
        "messages": f"{n:,}",
        "database size": f"{db_size / 1e6:.1f} MB",
        "backup file": f"{size / 1e6:.1f} MB",
        "backup wall / CPU": f"{b_wall:.2f} s / {b_cpu:.2f} s",
        "restore wall / CPU": f"{r_wall:.2f} s / {r_cpu:.2f} s",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--systems", default="sqlite,postgres")
    args = p.parse_args()
    rows = [run(kind, args.messages) for kind in args.systems.split(",")]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(row[c] for c in cols) + " |")
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
