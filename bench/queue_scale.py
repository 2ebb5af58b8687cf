"""The queue with 1,000,000 deliveries waiting: how long a claim of a batch takes, and the
query plan, on SQLite and PostgreSQL.

    .venv/bin/python bench/queue_scale.py [--rows 1000000] [--systems sqlite,postgres]

Rows are bulk-inserted (half due now, half due later, spread over 100 messages); then 50
claims of 200 deliveries are timed, as a worker makes them. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PG_SERVER = os.environ.get(
    "POSTWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def run(kind: str, rows: int) -> dict[str, object]:
    import asyncpg
    from sqlalchemy import insert, text

    from postway.delivery import queue
    from postway.store.db import Database
    from postway.store.models import Delivery, Identity, Message, Organisation, User, utcnow

    pg_name = None
    if kind == "postgres":
        pg_name = f"pw_qscale_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(PG_SERVER)
        await conn.execute(f'CREATE DATABASE "{pg_name}"')
        await conn.close()
        url = (
            "postgresql+asyncpg://" + PG_SERVER.split("://", 1)[1].rsplit("/", 1)[0] + "/" + pg_name
        )
    else:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/q.db"
    db = Database(url)
    await db.upgrade()
    now = utcnow()
    async with db.session() as s, s.begin():
        s.add(Organisation(id="o" * 32, name="o", blocked_domains=[], throttle={}))
        await s.flush()  # no relationships between these models: flush in FK order
        s.add(User(id="u" * 32, org_id="o" * 32, email="u@x.example", password_hash="x"))
        await s.flush()
        s.add(
            Identity(id="i" * 32, org_id="o" * 32, user_id="u" * 32, name="n", email="u@x.example")
        )
        await s.flush()
        for m in range(100):
            s.add(
                Message(
                    id=f"{m:032d}", org_id="o" * 32, user_id="u" * 32, identity_id="i" * 32,
                    channel="managed", from_address="u@x.example", message_id_header="<x>",
                    raw=b"x", size=1,
                )
            )  # fmt: skip
    started = time.perf_counter()
    chunk = 20_000
    for first in range(0, rows, chunk):
        values = [
            {
                "id": uuid.uuid4().hex, "message_id": f"{i % 100:032d}", "org_id": "o" * 32,
                "user_id": "u" * 32, "recipient": f"r{i}@d{i % 50}.example",
                "recipient_domain": f"d{i % 50}.example", "kind": "to", "channel": "managed",
                "state": "queued" if i % 2 else "deferred", "attempts": 0,
                "due_at": now - timedelta(seconds=i % 1000) if i % 2 else now + timedelta(hours=1 + i % 50),
                "expires_at": now + timedelta(days=5), "created_at": now, "updated_at": now,
            }
            for i in range(first, min(first + chunk, rows))
        ]  # fmt: skip
        async with db.session() as s, s.begin():
            await s.execute(insert(Delivery), values)
    load = time.perf_counter() - started
    if kind == "postgres":
        async with db.engine.connect() as c:
            await c.execute(text("ANALYZE deliveries"))
            await c.commit()
    times = []
    for n in range(50):
        t = time.perf_counter()
        async with db.session() as s, s.begin():
            got = await queue.claim_due(
                s, f"bench-{n}", utcnow(), 200, 300, postgres=kind == "postgres"
            )
        times.append((time.perf_counter() - t) * 1000)
        assert len(got) == 200, len(got)
    async with db.engine.connect() as c:
        if kind == "postgres":
            plan = (await c.execute(text(
                "EXPLAIN SELECT id FROM deliveries WHERE due_at <= now() ORDER BY due_at LIMIT 200 "
                "FOR UPDATE SKIP LOCKED"
            ))).scalars().all()  # fmt: skip
        else:
            plan = [
                str(r[-1])
                for r in (await c.execute(text(
                    "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE due_at <= '2100-01-01' "
                    "ORDER BY due_at LIMIT 200"
                ))).all()
            ]  # fmt: skip
    await db.dispose()
    if pg_name:
        conn = await asyncpg.connect(PG_SERVER)
        await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        await conn.close()
    return {
        "db": kind,
        "rows": rows,
        "load_s": load,
        "p50": statistics.median(times),
        "p99": sorted(times)[int(0.99 * len(times)) - 1],
        # the access path is the line that says how rows are found
        "plan": next(
            (p.strip() for p in plan if "Scan" in p or "SEARCH" in p or "SCAN" in p), ""
        ).split("  (cost")[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--systems", default="sqlite,postgres")
    args = p.parse_args()
    print("| database | rows waiting | bulk load s | claim 200: p50 ms | p99 ms | plan |")
    print("|---|---:|---:|---:|---:|---|")
    for kind in args.systems.split(","):
        r = asyncio.run(run(kind, args.rows))
        print(
            f"| {r['db']} | {r['rows']:,} | {r['load_s']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['plan']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
