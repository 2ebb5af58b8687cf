"""End-to-end delivery throughput, in-process: Postway (SQLite, PostgreSQL) against Postfix.

Not the headline figure: Postway is fed here through an in-process function
(`accept_messages`, 100 per call), not over HTTP; bench/api_throughput.py measures it through
the real interfaces (`postway serve` fed by wrk). This one isolates the delivery side.

N messages of ~2 KB to D destination domains, each domain routed to its own `smtp-sink`
(Postfix's C sink, so the sink is never the bottleneck) on loopback. A run is timed from the
first message accepted (into Postway's queue, or by Postfix's smtpd from `smtp-source`) to the
last message accepted by a sink (counted by the sinks, bench_support.Sinks). Postway signs with DKIM
(rsa-sha256) and keeps its queue in the database; Postfix signs nothing.

    .venv/bin/python bench/throughput.py                 # 20,000 messages, both databases
    .venv/bin/python bench/throughput.py --messages 2000 --systems postway-sqlite

Needs Debian's postfix package (smtp-sink, smtp-source) and a PostgreSQL server
(POSTWAY_TEST_POSTGRES_URL or 127.0.0.1:5432). Prints one table; run as root for Postfix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_support import PG_SERVER, PostfixInstance, Sinks, body_text  # noqa: E402


@dataclass
class Result:
    system: str
    messages: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(int(q * len(data)), len(data) - 1)]


class RssSampler:
    """Peak total memory (PSS: shared pages split between the processes sharing them, so
    Postfix's many small processes are not counted many times) of matching processes,
    sampled every 0.2 s."""

    def __init__(self, match: callable) -> None:  # type: ignore[valid-type]
        self.match = match
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    if not self.match(int(pid), cmd):
                        continue
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                except OSError:
                    continue
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


# --- Postway ---------------------------------------------------------------------------------


async def postway_run(args: argparse.Namespace, db_kind: str) -> Result:
    import asyncpg
    from sqlalchemy import select

    from postway.config import Settings
    from postway.delivery.submit import SendRequest, accept_messages
    from postway.runtime import Runtime
    from postway.store.identities import create_identity, mark_verified
    from postway.store.models import Delivery, DeliveryEvent
    from postway.store.users import create_user, principal_of

    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    pg_name = None
    if db_kind == "postgres":
        pg_name = f"pw_bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(PG_SERVER)
        await conn.execute(f'CREATE DATABASE "{pg_name}"')
        await conn.close()
        url = PG_SERVER.rsplit("/", 1)[0] + "/" + pg_name
    else:
        url = f"sqlite:///{tmp / 'postway.db'}"
    per_domain = args.messages // args.domains
    sinks = Sinks(args.domains)
    transport = ",".join(f"{d}=127.0.0.1:{p}" for d, p in sinks.domain_map().items())
    env = {
        **os.environ,
        "POSTWAY_DATA_DIR": str(tmp),
        "POSTWAY_DATABASE_URL": url,
        "POSTWAY_SECRET_KEY": "bench-secret-key-0123456789",
        "POSTWAY_TRANSPORT": transport,
        "POSTWAY_WORKER_BATCH": str(args.batch),
        "POSTWAY_WORKER_POLL_SECONDS": "0.05",
        "POSTWAY_LOG_LEVEL": "WARNING",
        "POSTWAY_HOSTNAME": "bench.postway.test",
    }
    settings = Settings(
        data_dir=tmp, database_url=url, secret_key=env["POSTWAY_SECRET_KEY"], transport=transport
    )
    rt = Runtime(settings)
    await rt.start()
    async with rt.db.session() as s, s.begin():
        who = principal_of(await create_user(s, "bench@acme.example", "bench-password"))
        ident = await create_identity(s, who, name="Bench", email="bench@acme.example")
        await mark_verified(s, "bench@acme.example")
    subprocess.run(
        [sys.executable, "-m", "postway", "dkim", "show"], env=env, check=True, capture_output=True
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "postway", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(args.workers)
    ]
    worker_pids = {w.pid for w in workers}
    rss = RssSampler(lambda pid, cmd: pid in worker_pids or pid == os.getpid())
    await asyncio.sleep(1.5)  # workers up and polling
    started = time.monotonic()
    # accept_messages: checks and MIME build in a read transaction, then one short write
    # transaction per 100 messages (as a CRM's batch would arrive)
    total = per_domain * args.domains
    for first in range(0, total, 100):
        await accept_messages(
            rt.db,
            settings,
            who,
            [
                SendRequest(
                    identity_id=ident.id,
                    to=[f"lead{i}@d{i % args.domains}.bench.test"],
                    subject=f"Bench {i}",
                    text=body_text(i, args.size),
                )
                for i in range(first, min(first + 100, total))
            ],
        )
    injected = time.monotonic()
    try:
        _, ended = await asyncio.to_thread(
            sinks.wait_total, per_domain * args.domains, args.timeout
        )
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
        sinks.stop()
    peak = rss.stop()
    async with rt.db.session() as s:
        rows = await s.execute(
            select(Delivery.created_at, DeliveryEvent.created_at)
            .join(DeliveryEvent, DeliveryEvent.delivery_id == Delivery.id)
            .where(DeliveryEvent.type == "delivered")
        )
        lat = [(done - made).total_seconds() for made, done in rows.all()]
    await rt.aclose()
    if pg_name:
        conn = await asyncpg.connect(PG_SERVER)
        await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        await conn.close()
    shutil.rmtree(tmp, ignore_errors=True)
    n = per_domain * args.domains
    return Result(
        f"postway-{db_kind}",
        n,
        ended - started,
        lat,
        peak,
        f"injected {n / (injected - started):.0f}/s; {args.workers} worker(s), DKIM rsa-sha256",
    )


# --- Postfix ---------------------------------------------------------------------------------

PF = Path("/tmp/postway-bench-postfix")


def postfix_run(args: argparse.Namespace) -> Result:
    per_domain = args.messages // args.domains
    sinks = Sinks(args.domains)
    routes = sinks.domain_map()
    try:
        pf = PostfixInstance(routes, PF)
        rss = RssSampler(lambda pid, cmd: _exe(pid).startswith("/usr/lib/postfix/"))
        started = time.monotonic()
        inject_s = pf.inject([f"lead@{d}" for d in routes], per_domain, 2 * args.domains, args.size)
        n = per_domain * args.domains
        _, ended = sinks.wait_total(n, args.timeout)
        peak = rss.stop()
        pf.stop()
    finally:
        sinks.stop()
    return Result(
        "postfix",
        n,
        ended - started,
        pf.delays(),
        peak,
        f"smtp-source injected {n / inject_s:.0f}/s",
    )


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.system == "postfix"), None)
    head = "| system | messages | seconds | msg/s | p50 latency s | p99 latency s | peak PSS MB | vs Postfix | notes |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ratio = f"{r.rate / base.rate:.2f}x" if base and base.rate else "-"
        rows.append(
            f"| {r.system} | {r.messages} | {r.seconds:.1f} | {r.rate:.0f} | {r.pct(0.5):.2f} | "
            f"{r.pct(0.99):.2f} | {r.peak_rss_mb:.0f} | {ratio} | {r.note} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--domains", type=int, default=20)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--systems", default="postfix,postway-sqlite,postway-postgres")
    args = p.parse_args()
    results = []
    for system in args.systems.split(","):
        print(f"running {system} ...", file=sys.stderr, flush=True)
        if system == "postfix":
            results.append(postfix_run(args))
        else:
            results.append(asyncio.run(postway_run(args, system.removeprefix("postway-"))))
        print(table(results[-1:]), file=sys.stderr, flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
