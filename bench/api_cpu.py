"""CPU per accepted send inside the web app, without the network: POST /api/v1/messages
called through the ASGI app (every middleware, the send lane, the group commit, a real
database) N times with C requests in flight, timed with process time (all threads).

    .venv/bin/python bench/api_cpu.py                      # 4,000 sends, 32 at a time, SQLite
    .venv/bin/python bench/api_cpu.py --concurrency 1      # one at a time (no grouping)
    .venv/bin/python bench/api_cpu.py --database-url postgresql+asyncpg://postgres@127.0.0.1/x

It complements bench/api_throughput.py (which measures what a client sees over HTTP): this
one isolates the application's own cost per request. Nothing is delivered (the transport
points at a closed port and no worker runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from postway.config import Settings  # noqa: E402
from postway.runtime import Runtime  # noqa: E402
from postway.store.identities import create_identity, mark_verified  # noqa: E402
from postway.store.users import create_token, create_user, principal_of  # noqa: E402
from postway.web.app import create_app  # noqa: E402

TEXT = "Hello, this is a line of a sales email body for the benchmark.\n" * 30  # ~2 KB


async def run(args: argparse.Namespace) -> None:
    settings = Settings(
        data_dir=tempfile.mkdtemp(),
        transport="*=127.0.0.1:9",
        database_url=args.database_url,
        secret_key="bench-secret-key-0123456789abcdef0123",
    )
    rt = Runtime(settings)
    await rt.start()
    async with rt.db.session() as s, s.begin():
        user = await create_user(s, "bench@acme.example", "bench-password", admin=True)
        token = await create_token(s, user, "bench")
    async with rt.db.session() as s, s.begin():
        ident = await create_identity(s, principal_of(user), name="Bench", email=user.email)
        await mark_verified(s, user.email)
    app = create_app(rt)
    statuses: dict[int, int] = {}

    async def send(i: int) -> None:
        body = json.dumps(
            {"identity_id": ident.id, "to": [f"lead{i}@d{i % 4}.bench.test"], "text": TEXT}
        ).encode()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/messages",
            "raw_path": b"/api/v1/messages",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def respond(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, respond)

    async def lane(first: int, count: int) -> None:
        for i in range(first, count, args.concurrency):
            await send(i)

    await asyncio.gather(*(lane(k, 200) for k in range(args.concurrency)))  # warm-up
    statuses.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(k, args.requests) for k in range(args.concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await rt.aclose()
    print(
        f"{args.requests} sends, {args.concurrency} in flight, "
        f"{settings.resolved_database_url().split(':', 1)[0]}: "
        f"{1000 * cpu / args.requests:.2f} ms CPU per send, {args.requests / wall:.0f} sends/s "
        f"in-process; answers {statuses}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--database-url", default="", help="empty: SQLite in a temporary folder")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
