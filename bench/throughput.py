"""End-to-end delivery throughput: Postway (SQLite, PostgreSQL) against Postfix, same workload.

N messages of ~2 KB to D destination domains, each domain routed to its own `smtp-sink`
(Postfix's C sink, so the sink is never the bottleneck) on loopback. A run is timed from the
first message accepted (into Postway's queue, or by Postfix's smtpd from `smtp-source`) to the
last message accepted by a sink (each sink exits after its share). Postway signs with DKIM
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
import re
import shutil
import socket
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

PG_SERVER = os.environ.get(
    "POSTWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sinks:
    """D smtp-sink processes; each exits after receiving its share of messages."""

    def __init__(self, domains: int, per_domain: int) -> None:
        self.ports = [free_port() for _ in range(domains)]
        self.procs = [
            subprocess.Popen(
                ["smtp-sink", "-u", "nobody", "-M", str(per_domain), f"127.0.0.1:{p}", "1024"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p in self.ports
        ]
        for p in self.ports:
            wait_port(p)

    def wait(self, timeout: float) -> float:
        """Seconds until every sink has exited (all mail accepted); raises on timeout."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        return time.monotonic()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


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


def body(i: int, size: int) -> str:
    line = "Postway throughput benchmark line, padding the body to the chosen size.\n"
    text = f"Message {i}\n" + line * (size // len(line) + 1)
    return text[:size]


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
    sinks = Sinks(args.domains, per_domain)
    transport = ",".join(f"d{i}.bench.test=127.0.0.1:{p}" for i, p in enumerate(sinks.ports))
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
                    text=body(i, args.size),
                )
                for i in range(first, min(first + 100, total))
            ],
        )
    injected = time.monotonic()
    try:
        ended = await asyncio.to_thread(sinks.wait, args.timeout)
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
    sinks = Sinks(args.domains, per_domain)
    etc, spool, data = PF / "etc", PF / "spool", PF / "data"
    subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True)
    shutil.rmtree(PF, ignore_errors=True)
    for d in (etc, spool, data):
        d.mkdir(parents=True)
    shutil.chown(data, "postfix")
    port = free_port()
    master = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        cols = line.split()
        if line and not line[0].isspace() and not line.startswith("#") and len(cols) >= 8:
            if cols[0] == "smtp" and cols[1] == "inet":
                cols[0] = f"127.0.0.1:{port}"
            cols[4] = "n"  # no chroot: the private queue has no jail set up
            line = " ".join(cols)
        master.append(line)
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    (etc / "transport").write_text(
        "".join(f"d{i}.bench.test smtp:[127.0.0.1]:{p}\n" for i, p in enumerate(sinks.ports))
    )
    (etc / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
myhostname = bench.postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {" ".join(f"d{i}.bench.test" for i in range(args.domains))}
transport_maps = texthash:{etc / "transport"}
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {PF / "maillog"}
maillog_file_prefixes = /var, /dev/stdout, {PF}
biff = no
"""
    )
    main_cf = Path("/etc/postfix/main.cf")
    default = main_cf.read_text()
    if str(etc) not in default:  # postfix -c needs the instance named in the default config
        main_cf.write_text(default + f"\nalternate_config_directories = {etc}\n")
    subprocess.run(["postfix", "-c", str(etc), "check"], check=True, capture_output=True)
    subprocess.run(["postfix", "-c", str(etc), "start"], check=True, capture_output=True)
    wait_port(port)
    rss = RssSampler(lambda pid, cmd: _exe(pid).startswith("/usr/lib/postfix/"))
    started = time.monotonic()
    sources = [
        subprocess.Popen(
            [
                "smtp-source", "-s", "2", "-l", str(args.size), "-m", str(per_domain),
                "-f", "bench@acme.example", "-t", f"lead@d{i}.bench.test", f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(args.domains)
    ]  # fmt: skip
    for s in sources:
        s.wait()
    injected = time.monotonic()
    try:
        ended = sinks.wait(args.timeout)
    finally:
        sinks.stop()
        peak = rss.stop()
        subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True)
    lat = []
    log = (PF / "maillog").read_text(errors="replace") if (PF / "maillog").exists() else ""
    for m in re.finditer(r"delay=([\d.]+),.*status=sent", log):
        lat.append(float(m.group(1)))
    n = per_domain * args.domains
    return Result(
        "postfix",
        n,
        ended - started,
        lat,
        peak,
        f"smtp-source injected {n / (injected - started):.0f}/s",
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
