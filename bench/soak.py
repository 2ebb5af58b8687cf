"""Sustained load with faulty destinations: mail posted through the HTTP API of a running
`postway serve` at a fixed rate for minutes while one destination defers everything, one
drops the connection and one is slow; prints a sample every 10 s and a reliability row
(bench/reliability_rows.py).

    .venv/bin/python bench/soak.py --database sqlite,postgres --minutes 10 [--rate N]
                                   [--measure-max] [--markdown]

Destinations (every domain routed with POSTWAY_TRANSPORT to a loopback peer; the peers are one
asyncio process of their own, started from this file with --peers):

    good    d0..d3.soak.test   accept everything; each message's Message-ID and arrival time
                               is reported back, so delivery latency (arrival minus the API's
                               202) is known per message
    defer   defer.soak.test    451 4.3.0 to every RCPT (--defer-share of the mail)
    drop    drop.soak.test     closes the connection after MAIL (--drop-share)
    slow    slow.soak.test     waits --slow-delay before every reply, then accepts
                               (--slow-share; at 1 s a reply a message takes about 5 s,
                               so Postway's 10 sessions carry about 2 a second: the default
                               0.2 % is 1/s at 500/s, half of what it can take)

The load is open loop (wrk2-style): a send is due every 1/rate seconds whatever the answers
do, and its latency is counted from when it was due, so a stall shows as latency instead of
being hidden by a client that waits. The client is a small HTTP/1.1 client over --connections
keep-alive connections on asyncio (uvloop), cheaper than httpx: at 500/s it costs a fraction of
a core; the "late" column says how far behind schedule the client itself was.

Queue lifetime and retry delays are shortened (POSTWAY_QUEUE_LIFETIME_SECONDS, default
--lifetime 150 s; POSTWAY_RETRY_BASE_SECONDS 10 s) so mail to the faulty destinations ends
too: after the load, the run waits until no delivery is queued or deferred, then checks every
accepted message in the database: good and slow mail delivered (and at its peer exactly once),
deferred and dropped mail failed or bounced, nothing left waiting.

Every 10 s: the summed RSS of the process tree (supervisor, web, worker) and its open file
descriptors (/proc/<pid>/fd), the API's p99 in that window, the good domains' delivery latency
p50/p99 of messages that arrived in the window, and the deliveries not yet final (queue).

tests/integration/test_soak.py runs the same code for 60 s at a low rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]

from api_throughput import Postway  # noqa: E402
from bench_support import body_text, process_tree, tree_memory_kb  # noqa: E402
from reliability_rows import ReliabilityRow, print_rows  # noqa: E402

GOOD = [f"d{i}.soak.test" for i in range(4)]
FAULTS = {"defer": "defer.soak.test", "drop": "drop.soak.test", "slow": "slow.soak.test"}
FINAL = ("delivered", "sent", "bounced", "failed", "suppressed")
MAX_RATE = {"sqlite": 1053.0, "postgres": 1240.0}  # README: bench/api_throughput.py, single


@dataclass
class SoakConfig:
    database: str = "sqlite"
    seconds: float = 600.0
    rate: float | None = None  # None: half the measured maximum (MAX_RATE or --measure-max)
    measure_max: bool = False
    connections: int = 64
    defer_share: float = 0.05
    drop_share: float = 0.05
    slow_share: float = 0.002
    slow_delay: float = 1.0
    lifetime: float = 150.0  # POSTWAY_QUEUE_LIFETIME_SECONDS for the run
    retry_base: float = 10.0
    retry_max: float = 60.0
    sample_every: float = 10.0
    settle: float = 600.0  # longest wait after the load for every delivery to be final
    body_size: int = 1000


@dataclass
class Sample:
    t: float  # seconds since the load began
    accepted_s: float
    api_p99_ms: float | None
    late_ms: float  # how far behind schedule the client was (worst in the window)
    rss_mb: float
    fds: int
    good_p50_s: float | None
    good_p99_s: float | None
    good_delivered: int
    queue: int  # deliveries not yet final


@dataclass
class SoakResult:
    database: str
    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    accepted: dict[str, tuple[float, str]] = field(default_factory=dict)  # msgid -> (t, kind)
    statuses: Counter[str] = field(default_factory=Counter)  # "202", "503", "error", ...
    api_latencies_ms: list[float] = field(default_factory=list)
    arrivals: Counter[str] = field(default_factory=Counter)  # msgid -> copies at a peer
    good_latencies: list[tuple[float, float]] = field(default_factory=list)  # (t rel, latency)
    states: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, state) -> n
    not_final: int = 0
    missing_in_db: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: int = 0
    settle_seconds: float = 0.0
    load_average: str = ""
    tracebacks: int = 0

    def good_p(self, q: float, since: float = 0.0, until: float = 1e12) -> float | None:
        return pct([lat for t, lat in self.good_latencies if since <= t < until], q)

    @property
    def api_p99_ms(self) -> float | None:
        return pct(self.api_latencies_ms, 99)

    @property
    def errors(self) -> str:
        other = sum(n for s, n in self.statuses.items() if s != "202")
        return (
            ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()) if s != "202")
            if other
            else "0 non-202"
        )

    def row(self, command: str) -> ReliabilityRow:
        minutes = self.seconds / 60
        p99 = self.api_p99_ms
        return ReliabilityRow(
            scenario=f"soak: {minutes:g} min at {self.rate:g}/s, faulty destinations",
            database=self.database,
            runs=1,
            messages=len(self.accepted),
            faults="3 destinations: 451 at every RCPT, connection dropped after MAIL, slow replies",
            lost=len(self.lost),
            duplicated=self.duplicated,
            errors=f"{self.errors}; API p99 {p99:.0f} ms; good-domain delivery p99 "
            f"{self.good_p(99) or 0:.2f} s"
            if p99 is not None
            else self.errors,
            command=command,
        )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q / 100))]


def kind_of(n: int, cfg: SoakConfig) -> str:
    """The destination of message n: an even spread (golden-ratio sequence), so every window
    of the run carries each kind in its share."""
    r = (n * 0.6180339887498949) % 1.0
    for kind, share in (("defer", cfg.defer_share), ("drop", cfg.drop_share),
                        ("slow", cfg.slow_share)):  # fmt: skip
        if r < share:
            return kind
        r -= share
    return "good"


def domain_of(n: int, kind: str) -> str:
    return GOOD[n % len(GOOD)] if kind == "good" else FAULTS[kind]


# --- the peers (own process) -----------------------------------------------------------------

_MSGID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.I | re.M)


async def _peer_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str, delay: float,
    out: list[str], port: int,
) -> None:  # fmt: skip
    async def reply(text: str) -> None:
        if delay:
            await asyncio.sleep(delay)
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    try:
        await reply("220 soak.test ESMTP")
        rcpts = 0
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                await reply("250-soak.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800")
            elif verb == b"HELO":
                await reply("250 soak.test")
            elif verb == b"MAIL":
                if mode == "drop":
                    return
                rcpts = 0
                await reply("250 2.1.0 Ok")
            elif verb == b"RCPT":
                if mode == "defer":
                    await reply("451 4.3.0 Try again later (soak defer)")
                else:
                    rcpts += 1
                    await reply("250 2.1.5 Ok")
            elif verb == b"DATA":
                if not rcpts:
                    await reply("554 5.5.1 No valid recipients")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                chunks = []
                while (chunk := await reader.readline()) not in (b".\r\n", b".\n", b""):
                    chunks.append(chunk)
                head = b"".join(chunks).split(b"\r\n\r\n", 1)[0]
                m = _MSGID.search(head)
                out.append(f"D {port} {m.group(1).decode() if m else '-'} {time.time():.6f}")
                await reply("250 2.0.0 Ok: queued")
                rcpts = 0
            elif verb == b"RSET":
                rcpts = 0
                await reply("250 2.0.0 Ok")
            elif verb == b"NOOP":
                await reply("250 2.0.0 Ok")
            elif verb == b"QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("502 5.5.2 Command not recognized")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _peers_main(spec: list[tuple[str, float]]) -> None:
    out: list[str] = []
    ports = []
    # one server per (mode, delay); the port is known once it listens
    servers = []
    for mode, delay in spec:
        holder: dict[str, int] = {}

        def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, mode: str = mode,
                    delay: float = delay, holder: dict[str, int] = holder):  # fmt: skip
            return _peer_session(r, w, mode, delay, out, holder["port"])

        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=512)
        holder["port"] = server.sockets[0].getsockname()[1]
        ports.append(holder["port"])
        servers.append(server)
    sys.stdout.write("PORTS " + " ".join(map(str, ports)) + "\n")
    sys.stdout.flush()
    while True:
        await asyncio.sleep(0.05)
        if out:
            lines, out[:] = list(out), []
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


class Peers:
    """The peer process: good sinks and the three faulty destinations."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.spec = [("good", 0.0)] * len(GOOD) + [
            ("defer", 0.0), ("drop", 0.0), ("slow", cfg.slow_delay),
        ]  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None
        self.routes: dict[str, int] = {}

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--peers", json.dumps(self.spec),
            stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        if not line.startswith("PORTS "):
            raise RuntimeError(f"peers said {line!r}")
        ports = [int(p) for p in line.split()[1:]]
        names = GOOD + [FAULTS["defer"], FAULTS["drop"], FAULTS["slow"]]
        self.routes = dict(zip(names, ports, strict=True))

    async def arrivals(self):  # type: ignore[no-untyped-def]
        """(port, Message-ID, arrival time) of every message a peer accepted."""
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            parts = line.decode().split()
            if len(parts) == 4 and parts[0] == "D":
                yield int(parts[1]), parts[2].strip("<>"), float(parts[3])

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


# --- the open-loop HTTP client ---------------------------------------------------------------


class Client:
    """POST /api/v1/messages at `rate` a second, each send due at its time whatever came
    back before (latency counted from when it was due)."""

    def __init__(self, pw: Postway, cfg: SoakConfig, result: SoakResult, rate: float) -> None:
        self.pw = pw
        self.cfg = cfg
        self.result = result
        self.rate = rate
        self.queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        self.window_lat: list[float] = []
        self.window_ok = 0
        self.window_late = 0.0
        self.t0 = 0.0
        self.text = json.dumps(body_text(0, cfg.body_size))

    def _request(self, n: int, kind: str) -> bytes:
        body = (
            f'{{"identity_id":"{self.pw.identity}","to":["lead{n}@{domain_of(n, kind)}"],'
            f'"subject":"Soak {n}","text":{self.text}}}'
        ).encode()
        head = (
            f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.pw.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body

    async def _connection(self) -> None:
        reader = writer = None
        while (item := await self.queue.get()) is not None:
            n, due = item
            kind = kind_of(n, self.cfg)
            status = "error"
            body = b""
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.pw.port)
                assert reader is not None
                writer.write(self._request(n, kind))
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12].decode()
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                body = await reader.readexactly(int(m.group(1))) if m else b""
                if re.search(rb"connection:\s*close", head, re.I):
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                if writer is not None:
                    writer.close()
                reader = writer = None
            now = time.monotonic()
            self.result.statuses[status] += 1
            if status == "202":
                msgid = json.loads(body)["message_id_header"].strip("<>")
                self.result.accepted[msgid] = (time.time(), kind)
                self.window_ok += 1
            lat = (now - due) * 1000
            self.result.api_latencies_ms.append(lat)
            self.window_lat.append(lat)
        if writer is not None:
            writer.close()

    async def run(self, seconds: float) -> None:
        conns = [asyncio.create_task(self._connection()) for _ in range(self.cfg.connections)]
        self.t0 = time.monotonic()
        gap = 1.0 / self.rate
        n = 0
        while (due := self.t0 + n * gap) < self.t0 + seconds:
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                self.window_late = max(self.window_late, -wait * 1000)
            self.queue.put_nowait((n, due))
            n += 1
        for _ in conns:
            self.queue.put_nowait(None)
        await asyncio.gather(*conns)

    def take_window(self) -> tuple[int, float | None, float]:
        ok, lat, late = self.window_ok, pct(self.window_lat, 99), self.window_late
        self.window_ok, self.window_lat, self.window_late = 0, [], 0.0
        return ok, lat, late


# --- the database, read from outside ---------------------------------------------------------


def query(pw: Postway, sql: str) -> list[tuple[str, ...]]:
    if pw.pg is None:
        conn = sqlite3.connect(f"file:{pw.data / 'postway.db'}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(str(c) for c in row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    out = subprocess.run(
        ["psql", pw.pg.url, "-At", "-F", "\t", "-c", sql], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def waiting(pw: Postway) -> int:
    return int(
        query(pw, "SELECT count(*) FROM deliveries WHERE state IN ('queued','deferred')")[0][0]
    )


def open_fds(root: int) -> int:
    n = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{pid}/fd"))
    return n


# --- the run -------------------------------------------------------------------------------


def measure_max(pw: Postway, database: str) -> float:
    """wrk for 15 s at 32 connections, as bench/api_throughput.py measures the maximum."""
    from api_throughput import run_wrk

    args = argparse.Namespace(size=2000, domains=len(GOOD), threads=2)
    # api_throughput's script sends to dN.bench.test: those domains are routed too
    w = run_wrk(pw, args, 1, 15.0, 32)
    return w.accepted / w.seconds


async def soak(cfg: SoakConfig, tmp: Path, log: bool = True) -> SoakResult:
    peers = Peers(cfg)
    await peers.start()
    routes = dict(peers.routes)
    for i in range(len(GOOD)):  # --measure-max's wrk script uses these names
        routes[f"d{i}.bench.test"] = routes[GOOD[i]]
    pw = Postway(cfg.database, routes, tmp)
    pw.env.update(
        POSTWAY_QUEUE_LIFETIME_SECONDS=str(cfg.lifetime),
        POSTWAY_RETRY_BASE_SECONDS=str(cfg.retry_base),
        POSTWAY_RETRY_MAX_SECONDS=str(cfg.retry_max),
        POSTWAY_LOG_LEVEL="WARNING",
        POSTWAY_SMTP_COMMAND_TIMEOUT="60",
    )
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, pw.start, "serve")
        await loop.run_in_executor(None, pw.set_up)
        rate = cfg.rate
        if rate is None:
            top = MAX_RATE[cfg.database]
            if cfg.measure_max:
                top = await loop.run_in_executor(None, measure_max, pw, cfg.database)
                if log:
                    print(f"measured maximum: {top:.0f}/s", flush=True)
            rate = round(top / 2)
        result = SoakResult(cfg.database, rate, cfg.seconds)
        result.load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
        assert pw.proc is not None
        root = pw.proc.pid
        good_ports = {routes[d] for d in GOOD}
        client = Client(pw, cfg, result, rate)
        window_good: list[float] = []

        async def collect() -> None:
            async for port, msgid, at in peers.arrivals():
                result.arrivals[msgid] += 1
                sent = result.accepted.get(msgid)
                if port in good_ports and sent is not None and result.arrivals[msgid] == 1:
                    lat = at - sent[0]
                    result.good_latencies.append((time.monotonic() - client.t0, lat))
                    window_good.append(lat)

        async def sample(t: float) -> None:
            ok, p99, late = client.take_window()
            rss, _ = tree_memory_kb(root)
            goods = list(window_good)
            window_good.clear()
            s = Sample(
                t=t, accepted_s=ok / cfg.sample_every, api_p99_ms=p99, late_ms=late,
                rss_mb=rss / 1024, fds=open_fds(root), good_p50_s=pct(goods, 50),
                good_p99_s=pct(goods, 99), good_delivered=len(goods),
                queue=await loop.run_in_executor(None, waiting, pw),
            )  # fmt: skip
            result.samples.append(s)
            if log:
                print(format_sample(s), flush=True)

        async def sampler() -> None:
            n = 1
            while True:
                await asyncio.sleep(client.t0 + n * cfg.sample_every - time.monotonic())
                await sample(n * cfg.sample_every)
                n += 1

        collector = asyncio.create_task(collect())
        if log:
            print(f"{cfg.database}: {rate:g}/s for {cfg.seconds:g} s; " + SAMPLE_HEADER, flush=True)
        client.t0 = time.monotonic()
        sampling = asyncio.create_task(sampler())
        await client.run(cfg.seconds)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        if not result.samples or result.samples[-1].t < cfg.seconds - 1:
            await sample(cfg.seconds)  # the window that ends with the load
        # settle: until nothing is queued or deferred
        started = time.monotonic()
        while time.monotonic() - started < cfg.settle:
            if await loop.run_in_executor(None, waiting, pw) == 0:
                break
            await asyncio.sleep(2)
        result.settle_seconds = time.monotonic() - started
        await asyncio.sleep(2)  # a late duplicate would land now
        await check(pw, result, loop)
        collector.cancel()
        for log_file in pw.logs:
            if log_file.exists():
                result.tracebacks += log_file.read_text(errors="replace").count("Traceback")
        return result
    finally:
        await loop.run_in_executor(None, pw.close)
        await peers.stop()


async def check(pw: Postway, result: SoakResult, loop: asyncio.AbstractEventLoop) -> None:
    """Every accepted message in the database, in a final state that fits its destination."""
    rows = await loop.run_in_executor(
        None, query, pw,
        "SELECT m.message_id_header, d.state FROM deliveries d "
        "JOIN messages m ON m.id = d.message_id",
    )  # fmt: skip
    state_of = {mid.strip("<>"): state for mid, state in rows}
    for msgid, (_, kind) in result.accepted.items():
        state = state_of.get(msgid)
        if state is None:
            result.missing_in_db += 1
            result.lost.append(msgid)
            continue
        result.states[(kind, state)] += 1
        if state not in FINAL:
            result.not_final += 1
            result.lost.append(msgid)
        elif kind in ("good", "slow") and (state != "delivered" or not result.arrivals[msgid]):
            result.lost.append(msgid)
    result.duplicated = sum(n - 1 for n in result.arrivals.values() if n > 1)


SAMPLE_HEADER = (
    "\n   t s  accepted/s  API p99 ms  late ms  RSS MB  fds  good p50 s  good p99 s"
    "  good/10s  queue"
)


def format_sample(s: Sample) -> str:
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return (
        f"{s.t:6.0f}  {s.accepted_s:10.1f}  {f(s.api_p99_ms, '10.1f'):>10}  {s.late_ms:7.1f}"
        f"  {s.rss_mb:6.1f}  {s.fds:3d}  {f(s.good_p50_s, '10.3f'):>10}"
        f"  {f(s.good_p99_s, '10.3f'):>10}  {s.good_delivered:8d}  {s.queue:5d}"
    )


def slope_per_minute(samples: list[Sample], attr: str) -> float:
    """Least-squares slope of a sampled figure, per minute."""
    xs = [s.t / 60 for s in samples]
    ys = [float(getattr(s, attr)) for s in samples]
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def summary(r: SoakResult) -> str:
    first = [s for s in r.samples if s.t <= 60]
    last = [s for s in r.samples if s.t > r.seconds - 60]

    def avg(ss: list[Sample], attr: str) -> float:
        return sum(float(getattr(s, attr)) for s in ss) / len(ss) if ss else 0.0

    p99 = r.api_p99_ms
    lines = [
        f"{r.database}: accepted {len(r.accepted):,} ({r.errors}); API p50 "
        f"{pct(r.api_latencies_ms, 50) or 0:.1f} ms, p99 {p99 or 0:.1f} ms",
        f"  RSS MB first minute {avg(first, 'rss_mb'):.1f}, last minute {avg(last, 'rss_mb'):.1f}"
        f", slope {slope_per_minute(r.samples, 'rss_mb'):+.2f} MB/min; fds first minute "
        f"{avg(first, 'fds'):.1f}, last minute {avg(last, 'fds'):.1f}, slope "
        f"{slope_per_minute(r.samples, 'fds'):+.2f}/min",
        f"  good-domain delivery latency p50 {r.good_p(50) or 0:.3f} s, p99 "
        f"{r.good_p(99) or 0:.3f} s (first minute p99 {r.good_p(99, 0, 60) or 0:.3f} s, last "
        f"minute p99 {r.good_p(99, r.seconds - 60, r.seconds) or 0:.3f} s)",
        f"  final states: {dict(sorted((f'{k}:{s}', n) for (k, s), n in r.states.items()))}",
        f"  settled in {r.settle_seconds:.0f} s; not final {r.not_final}, missing in the "
        f"database {r.missing_in_db}, lost {len(r.lost)}, duplicated {r.duplicated}, "
        f"tracebacks in the logs {r.tracebacks}; load average at start {r.load_average}",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--peers":
        spec = [(m, float(d)) for m, d in json.loads(sys.argv[2])]
        with contextlib.suppress(KeyboardInterrupt):
            _run(_peers_main(spec))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database", default="sqlite", help="sqlite, postgres or both")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, help="messages a second (default: half the maximum)")
    ap.add_argument(
        "--measure-max",
        action="store_true",
        help="measure the maximum with wrk (15 s) first instead of the README's",
    )
    ap.add_argument("--lifetime", type=float, default=150.0)
    ap.add_argument("--slow-delay", type=float, default=1.0)
    ap.add_argument("--defer-share", type=float, default=0.05)
    ap.add_argument("--drop-share", type=float, default=0.05)
    ap.add_argument("--slow-share", type=float, default=0.002)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--markdown", action="store_true")  # fmt: skip
    args = ap.parse_args()
    command = "python bench/soak.py " + " ".join(sys.argv[1:])
    rows = []
    for database in args.database.split(","):
        cfg = SoakConfig(
            database=database, seconds=args.minutes * 60, rate=args.rate,
            measure_max=args.measure_max, lifetime=args.lifetime, slow_delay=args.slow_delay,
            defer_share=args.defer_share, drop_share=args.drop_share,
            slow_share=args.slow_share, connections=args.connections,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix=f"pw-soak-{database}-") as tmp:
            r = _run(soak(cfg, Path(tmp)))
        print(summary(r), flush=True)
        rows.append(r.row(command))
    print_rows(rows, args.markdown)


def _run(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


if __name__ == "__main__":
    main()
