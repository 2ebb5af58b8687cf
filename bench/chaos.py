"""Kill chaos: mail posted continuously through the HTTP API while the web process and the
delivery workers of a running `postway serve` are SIGKILLed at random moments; then the
system settles and every message acknowledged with a 202 is looked for at the receiving end,
by its Message-ID. Prints one reliability row per run (bench/reliability_rows.py).

    .venv/bin/python bench/chaos.py --database sqlite,postgres --channel managed,gmail \\
                                    --kills 20 [--rate 20] [--clients 4] [--seed N] [--markdown]

What runs: Postway started as the README starts it (`bash scripts/run.sh`, i.e. `postway
serve`), fresh data folder; on PostgreSQL a fresh database on 127.0.0.1:5432
(POSTWAY_TEST_POSTGRES_URL overrides) and two delivery workers (`--workers 2`), on SQLite the
default one. Channels:

managed  every recipient domain routed (POSTWAY_TRANSPORT) to an SMTP sink on loopback
         (bench/recording_sink.py) that counts each message it takes by Message-ID. It
         takes `--delay` seconds (default 0.1) after the final dot before it takes the
         message and answers 250, as a real MTA writes to disk first; a sender that dies
         meanwhile leaves nothing behind.
gmail    the user connected a Gmail account through the Google stand-in
         (`postway.google_standin`, served on loopback as the tests serve it) exactly as a
         browser would; the stand-in counts each message it sends by Message-ID. Its answer
         comes `--delay` seconds after it sent the message (Gmail's API answers after it has
         taken the message; a worker killed meanwhile never learns the outcome).

Load: `--clients` threads post one single-recipient message per POST /api/v1/messages, at
`--rate` messages a second in all, from 2 s before the first kill to 1 s after the last. A
request that got no 202 (connection refused or reset while the web process is dead, a 503)
is not retried: the client goes on with a new message, so nothing acknowledged is ever
posted twice.

Kills: `--kills` SIGKILLs of the web process and a worker in turn (in a random order within
each pair; the worker chosen at random among the running ones). After each kill the harness waits until the supervisor has
started the victim again (and, for the web process, until it answers /healthz), then
`--gap` seconds (uniform at random, default 0.5-3) before the next: every kill lands on a
running system, at a random moment of its work. The supervisor stops the whole server when
one child exits QUICK_EXITS_ALLOWED times in a row within QUICK_EXIT_SECONDS of its start
(a child failing at start-up); a kill that would be such a third quick exit in a row of its
role waits until the victim is old enough, so children are still killed while starting up,
at most twice in a row.

Settling: posting stops; the run waits (up to `--settle` seconds) until every acknowledged
message has arrived and no delivery is queued or deferred in the database (a message sent
but not recorded by a killed worker is sent again when its lease runs out, so waiting only
for first arrivals would miss the duplicate). Leases are shortened to 10 s
(POSTWAY_LEASE_SECONDS, default 300 s) and retries to 1-5 s so a run settles in seconds.

Counted: lost = acknowledged, never received, and not in a final failed state (a failed one
is reported apart); duplicated = extra copies received of any message; duplicates with no
worker kill within DUP_WINDOW seconds after the first copy arrived are "unexplained" (the
only expected duplicate is mail whose recipient had it when the worker was killed, before
its result was committed: the outcome-unknown-after-the-final-dot case); delivered without a
202 = a message stored whose answer was lost with the web process (not acknowledged, so
neither lost nor duplicated). tests/integration/test_chaos.py runs the same code with 5 kills.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT / "tests"), str(ROOT / "tests" / "integration")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from api_throughput import Postway  # noqa: E402
from recording_sink import RecordingSink  # noqa: E402
from reliability_rows import ReliabilityRow, print_rows  # noqa: E402
from served import child_processes  # noqa: E402

from peers.google import ACCOUNT, GooglePeer  # noqa: E402
from postway.config import Settings  # noqa: E402
from postway.google_standin import SentMail  # noqa: E402
from postway.runtime import Runtime  # noqa: E402
from postway.store.identities import create_identity, mark_verified  # noqa: E402
from postway.store.users import create_token, create_user, principal_of  # noqa: E402
from postway.supervisor import QUICK_EXIT_SECONDS, QUICK_EXITS_ALLOWED  # noqa: E402

DOMAIN = "chaos.bench.test"
LEASE_SECONDS = 10.0
DUP_WINDOW = 5.0  # a duplicate is explained by a worker kill this soon after its first copy
TICK = os.sysconf("SC_CLK_TCK")
_HEADERS = BytesHeaderParser()
PENDING_STATES = ("queued", "deferred")


# --- receiving ends ----------------------------------------------------------------------------


class GmailReceiver:
    """The Google stand-in with one account (rep@gmail.test), counting what it sends by the
    Message-ID of the raw message, with the time of each first arrival."""

    def __init__(self, delay: float = 0.0) -> None:
        self.peer = GooglePeer(auto_approve=True)
        self.delay = delay  # seconds between Gmail taking a message and its answer
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self.peer.state.on_send = self._on_send

    async def _on_send(self, sent: SentMail) -> None:
        key = str(_HEADERS.parsebytes(sent.raw).get("Message-ID", "")).strip()
        now = time.time()
        with self._lock:
            self.counts[key] += 1
            self.first_seen.setdefault(key, now)
        if self.delay:
            await asyncio.sleep(self.delay)  # taken, but the answer is not back yet

    def start(self) -> GmailReceiver:
        self.peer.start()
        return self

    def stop(self) -> None:
        self.peer.stop()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


Receiver = RecordingSink | GmailReceiver


# --- results -----------------------------------------------------------------------------------


@dataclass
class Kill:
    at: float  # time.time()
    role: str  # "web" or "worker"
    pid: int
    age: float  # seconds the victim had been running


@dataclass
class ChaosResult:
    database: str
    channel: str
    kills: list[Kill] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0  # requests with no HTTP answer (web process dead)
    latencies: list[float] = field(default_factory=list)  # seconds, of every 202
    accepted: dict[str, str] = field(default_factory=dict)  # Message-ID -> message id (202s)
    lost: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # acknowledged, ended failed/bounced
    duplicated: int = 0  # extra copies received
    duplicated_ids: list[str] = field(default_factory=list)
    unexplained_duplicates: list[str] = field(default_factory=list)
    most_duplicates_per_kill: int = 0  # the most duplicates one worker kill explains
    unacknowledged_delivered: int = 0
    pending_at_end: int = 0  # deliveries still queued/deferred when settling ended
    settle_seconds: float = 0.0
    posting_seconds: float = 0.0
    wall_seconds: float = 0.0
    supervisor_alive: bool = True

    @property
    def web_kills(self) -> int:
        return sum(k.role == "web" for k in self.kills)

    @property
    def worker_kills(self) -> int:
        return sum(k.role == "worker" for k in self.kills)

    @property
    def errors(self) -> str:
        e500 = sum(n for s, n in self.statuses.items() if s >= 500 and s != 503)
        other = sum(n for s, n in self.statuses.items() if s < 500 and s != 202)
        words = [
            f"{e500} 500",
            f"{self.statuses.get(503, 0)} 503",
            f"{self.transport_errors} no answer (web down)",
        ]
        if other:
            words.append(f"{other} other")
        if self.unacknowledged_delivered:
            words.append(f"{self.unacknowledged_delivered} delivered without a 202")
        if self.failed:
            words.append(f"{len(self.failed)} failed")
        return "; ".join(words)

    def row(self, command: str) -> ReliabilityRow:
        return ReliabilityRow(
            scenario=f"kill chaos, {self.channel} channel",
            database=self.database,
            runs=1,
            messages=len(self.accepted),
            faults=f"{len(self.kills)} kills ({self.web_kills} web, {self.worker_kills} worker)",
            lost=len(self.lost),
            duplicated=self.duplicated,
            errors=self.errors,
            command=command,
        )

    def summary(self) -> str:
        return (
            f"{self.database}/{self.channel}: {len(self.accepted)} acknowledged, answers "
            f"{dict(self.statuses)}, no answer {self.transport_errors}, kills "
            f"{len(self.kills)} ({self.web_kills} web, {self.worker_kills} worker; "
            f"{sum(k.age < QUICK_EXIT_SECONDS for k in self.kills)} within "
            f"{QUICK_EXIT_SECONDS:.0f} s of the victim's start), lost {len(self.lost)}, failed "
            f"{len(self.failed)}, duplicated {self.duplicated} (unexplained "
            f"{len(self.unexplained_duplicates)}, at most {self.most_duplicates_per_kill} after one "
            f"worker kill), delivered without a 202 "
            f"{self.unacknowledged_delivered}, still pending {self.pending_at_end}, settled in "
            f"{self.settle_seconds:.1f} s, wall {self.wall_seconds:.1f} s, slowest 202 "
            f"{max(self.latencies, default=0):.2f} s, posting {self.posting_seconds:.1f} s"
        )


# --- load --------------------------------------------------------------------------------------


class Poster:
    """`clients` threads posting single messages at `rate` a second in all, each on its own
    keep-alive connection (opened again after an error); a message without a 202 is not
    retried."""

    def __init__(self, pw: Postway, identity: str, result: ChaosResult, clients: int,
                 rate: float) -> None:  # fmt: skip
        self.pw = pw
        self.identity = identity
        self.result = result
        self.gap = 1.0 / rate
        self._next_at = time.monotonic()
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Poster:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _ticket(self) -> tuple[int, float]:
        with self._lock:
            self._n += 1
            self._next_at = max(self._next_at + self.gap, time.monotonic() - 1.0)
            return self._n, self._next_at

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.pw.token}"}
        while not self._stop.is_set():
            n, at = self._ticket()
            if self._stop.wait(max(0.0, at - time.monotonic())):
                break
            body = {
                "identity_id": self.identity,
                "to": [f"lead{n}@{DOMAIN}"],
                "subject": f"Chaos {n}",
                "text": f"Message {n} of the kill chaos harness.",
            }
            sent_at = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.pw.port, timeout=60)
                conn.request("POST", "/api/v1/messages", json.dumps(body).encode(), headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                with self._lock:
                    self.result.transport_errors += 1
                continue
            with self._lock:
                self.result.statuses[resp.status] += 1
                if resp.status == 202:
                    self.result.latencies.append(time.monotonic() - sent_at)
                    out = json.loads(raw)
                    self.result.accepted[out["message_id_header"]] = out["id"]
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


# --- kills -------------------------------------------------------------------------------------


def process_age(pid: int) -> float:
    """Seconds since `pid` started (from /proc), 0.0 when it is gone."""
    try:
        start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start / TICK


class Killer:
    """SIGKILLs children of the supervisor `serve_pid` at random moments (see the module's
    words on the quick-exit rule)."""

    MARGIN = 0.7  # the supervisor times a child from a little after the fork and polls at 0.2 s

    def __init__(self, serve_pid: int, port: int, result: ChaosResult, rng: random.Random,
                 gap: tuple[float, float]) -> None:  # fmt: skip
        self.serve_pid = serve_pid
        self.port = port
        self.result = result
        self.rng = rng
        self.gap = gap
        self.quick_in_a_row: Counter[str] = Counter()
        self._roles: list[str] = []
        self._running: Counter[str] = Counter()  # children by role before the last kill

    def _victim(self, role: str, deadline: float) -> int:
        while time.monotonic() < deadline:
            pids = [pid for r, pid in child_processes(self.serve_pid) if r == role]
            if pids:
                return self.rng.choice(pids)
            time.sleep(0.05)  # restarted a moment ago: not started again yet
        raise RuntimeError(f"no {role} process to kill under {self.serve_pid}")

    def kill_one(self) -> Kill:
        self._running = Counter(r for r, _ in child_processes(self.serve_pid))
        if not self._roles:  # web and workers taken in turn, in a random order within a pair
            self._roles = self.rng.sample(("web", "worker"), 2)
        role = self._roles.pop()
        pid = self._victim(role, time.monotonic() + 30)
        if self.quick_in_a_row[role] >= QUICK_EXITS_ALLOWED - 1:
            while (age := process_age(pid)) and age < QUICK_EXIT_SECONDS + self.MARGIN:
                time.sleep(0.05)
        age = process_age(pid)
        os.kill(pid, signal.SIGKILL)
        kill = Kill(time.time(), role, pid, age)
        quick = age < QUICK_EXIT_SECONDS + self.MARGIN
        self.quick_in_a_row[role] = self.quick_in_a_row[role] + 1 if quick else 0
        return kill

    def _back(self, kill: Kill, timeout: float = 60.0) -> None:
        """Wait until the supervisor replaced the victim and, for the web process, until it
        answers again: the next gap starts from a running system."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = child_processes(self.serve_pid)
            same = [p for r, p in kids if r == kill.role]
            if kill.pid not in same and len(same) >= self._running[kill.role]:
                if kill.role != "web":
                    return
                with contextlib.suppress(OSError):
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    try:
                        conn.request("GET", "/healthz")
                        if conn.getresponse().status == 200:
                            return
                    finally:
                        conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"the {kill.role} process was not back within {timeout:.0f} s")

    def run(self, kills: int) -> None:
        for _ in range(kills):
            time.sleep(self.rng.uniform(*self.gap))
            kill = self.kill_one()
            self.result.kills.append(kill)
            self._back(kill)


# --- the run -----------------------------------------------------------------------------------


def pending_deliveries(pw: Postway) -> int:
    """Deliveries still queued or deferred, read from the database itself."""
    sql = "SELECT count(*) FROM deliveries WHERE state IN ('queued', 'deferred')"
    if pw.pg is None:
        with contextlib.closing(sqlite3.connect(pw.data / "postway.db", timeout=30)) as db:
            return int(db.execute(sql).fetchone()[0])
    out = subprocess.run(["psql", pw.pg.url, "-At", "-c", sql], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.strip())


SECRET = "chaos-harness-secret-0123456789abcdef"  # noqa: S105 (a throwaway test server)
USER = "chaos@acme.example"


async def _seed(pw: Postway) -> tuple[str, str]:
    """The admin user, an API token and a verified managed identity, written straight into
    the (migrated) database before `serve` starts: three `postway` commands cost seconds
    each on a loaded machine. Returns (token, identity id)."""
    url = pw.pg.url if pw.pg else ""
    rt = Runtime(Settings(data_dir=pw.data, database_url=url, secret_key=SECRET))
    await rt.start()
    try:
        async with rt.db.session() as s, s.begin():
            user = await create_user(s, USER, "chaos-password-0123", admin=True)
            token = await create_token(s, user)
            ident = await create_identity(s, principal_of(user), name="Chaos", email=USER)
            await mark_verified(s, USER)
            return token, ident.id
    finally:
        await rt.aclose()


def connect_gmail(pw: Postway) -> str:
    """As a user would: start connecting, approve at the stand-in (auto-approving), come
    back to Postway's callback, choose Gmail; returns the id of an identity for the account's
    address."""
    status, out = pw.request("GET", "/api/v1/delivery-channel/gmail/connect")
    if status != 200:
        raise RuntimeError(f"gmail connect: {status} {out}")
    consent = httpx.get(out["authorization_url"], follow_redirects=False, timeout=30)
    back = urlsplit(consent.headers["location"])
    done = httpx.get(f"http://127.0.0.1:{pw.port}{back.path}?{back.query}", timeout=30)
    if done.status_code not in (200, 303):
        raise RuntimeError(f"gmail callback: {done.status_code} {done.text[:500]}")
    status, out = pw.request("PUT", "/api/v1/delivery-channel", {"channel": "gmail"})
    if status != 200:
        raise RuntimeError(f"choose gmail: {status} {out}")
    status, out = pw.request("POST", "/api/v1/identities", {"name": "Rep", "email": ACCOUNT})
    if status != 201:
        raise RuntimeError(f"gmail identity: {status} {out}")
    return str(out["id"])


@contextlib.contextmanager
def running(database: str, channel: str, tmp: Path, workers: int | None, delay: float
            ) -> Iterator[tuple[Postway, Receiver, str]]:  # fmt: skip
    """`postway serve` with a user, a token and an identity on `channel`, and the receiving
    end; yields (postway, receiver, identity id)."""
    receiver: Receiver
    if channel == "managed":
        receiver = RecordingSink(delay=delay).start()
    else:
        receiver = GmailReceiver(delay=delay)
    if isinstance(receiver, GmailReceiver):
        receiver.start()
        routes = {DOMAIN: 9}  # nothing goes to SMTP
    else:
        routes = {DOMAIN: receiver.port}
    pw = Postway(database, routes, tmp)
    pw.env.update(
        POSTWAY_LOG_LEVEL="WARNING",
        POSTWAY_LEASE_SECONDS=str(LEASE_SECONDS),
        POSTWAY_WORKER_POLL_SECONDS="0.2",
        POSTWAY_RETRY_BASE_SECONDS="1",
        POSTWAY_RETRY_MAX_SECONDS="5",
    )
    if isinstance(receiver, GmailReceiver):
        pw.env.update(
            POSTWAY_GOOGLE_BASE_URL=receiver.peer.base_url,
            POSTWAY_GOOGLE_CLIENT_ID=receiver.peer.client_id,
            POSTWAY_GOOGLE_CLIENT_SECRET=receiver.peer.client_secret,
        )
    if workers is None:
        workers = 2 if database == "postgres" else 0  # 0: serve's own choice (1 on SQLite)
    try:
        pw.env["POSTWAY_SECRET_KEY"] = SECRET
        pw.token, pw.identity = asyncio.run(_seed(pw))
        pw.start("serve", ("--workers", str(workers)) if workers else ())
        identity = connect_gmail(pw) if channel == "gmail" else pw.identity
        yield pw, receiver, identity
    finally:
        pw.close()
        receiver.stop()


def settle(pw: Postway, receiver: Receiver, result: ChaosResult, seconds: float) -> None:
    """Wait until every acknowledged message arrived and nothing is queued or deferred (or
    `seconds` pass), then count."""
    started = time.monotonic()
    wanted = set(result.accepted)
    while time.monotonic() - started < seconds:
        if wanted <= set(receiver.snapshot()) and pending_deliveries(pw) == 0:
            break
        time.sleep(0.5)
    result.settle_seconds = time.monotonic() - started
    result.pending_at_end = pending_deliveries(pw)
    got = receiver.snapshot()
    missing = sorted(wanted - set(got))
    for mid in missing:  # never received: failed for good, or lost
        status, out = pw.request("GET", f"/api/v1/messages/{result.accepted[mid]}")
        states = {d["state"] for d in out["deliveries"]} if status == 200 else set()
        (result.failed if states and states <= {"failed", "bounced"} else result.lost).append(mid)
    result.duplicated = sum(n - 1 for n in got.values() if n > 1)
    result.duplicated_ids = sorted(k for k, n in got.items() if n > 1)
    worker_kills = [k.at for k in result.kills if k.role == "worker"]
    per_kill: Counter[float] = Counter()
    for mid in result.duplicated_ids:
        first = receiver.first_seen.get(mid, 0.0)
        after = [at for at in worker_kills if first - 0.5 <= at <= first + DUP_WINDOW]
        if after:
            per_kill[min(after)] += got[mid] - 1  # the first kill after it had arrived
        else:
            result.unexplained_duplicates.append(mid)
    result.most_duplicates_per_kill = max(per_kill.values(), default=0)
    result.unacknowledged_delivered = len(set(got) - wanted)


def run_chaos(
    database: str,
    channel: str,
    kills: int,
    *,
    clients: int = 4,
    rate: float = 20.0,
    gap: tuple[float, float] = (0.5, 3.0),
    settle_seconds: float = 120.0,
    delay: float = 0.1,
    workers: int | None = None,
    seed: int | None = None,
    tmp: Path | None = None,
) -> ChaosResult:
    """One run: `postway serve` on `database` ("sqlite" or "postgres") sending through
    `channel` ("managed" or "gmail"), `kills` SIGKILLs under load, then settling."""
    began = time.monotonic()
    rng = random.Random(seed)
    result = ChaosResult(database, channel)
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-chaos-")))
        pw, receiver, identity = stack.enter_context(
            running(database, channel, tmp, workers, delay)
        )
        assert pw.proc is not None
        poster = Poster(pw, identity, result, clients, rate).start()
        posting = time.monotonic()
        try:
            time.sleep(2.0)
            Killer(pw.proc.pid, pw.port, result, rng, gap).run(kills)
            time.sleep(1.0)
        finally:
            poster.stop()
            result.posting_seconds = time.monotonic() - posting
        result.supervisor_alive = pw.proc.poll() is None
        if not result.supervisor_alive:
            raise RuntimeError(
                "postway serve exited during the kills: "
                + pw.logs[-1].read_text(errors="replace")[-3000:]
            )
        settle(pw, receiver, result, settle_seconds)
    result.wall_seconds = time.monotonic() - began
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database", default="sqlite,postgres")
    ap.add_argument("--channel", default="managed,gmail")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--rate", type=float, default=20.0, help="messages posted per second")
    ap.add_argument("--clients", type=int, default=4, help="concurrent posting clients")
    ap.add_argument("--gap", default="0.5,3", help="seconds between kills: low,high")
    ap.add_argument("--settle", type=float, default=180.0, help="longest wait to settle")
    ap.add_argument("--delay", type=float, default=0.1,
                    help="seconds the receiving end takes per message")  # fmt: skip
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    low, high = (float(x) for x in args.gap.split(","))
    command = "python bench/chaos.py " + " ".join(sys.argv[1:])
    rows = []
    for database in args.database.split(","):
        for channel in args.channel.split(","):
            r = run_chaos(
                database, channel, args.kills, clients=args.clients, rate=args.rate,
                gap=(low, high), settle_seconds=args.settle, delay=args.delay, seed=args.seed,
            )  # fmt: skip
            print(r.summary(), flush=True)
            for mid in r.lost:
                print(f"  lost: {mid}", flush=True)
            for mid in r.unexplained_duplicates:
                print(f"  unexplained duplicate: {mid}", flush=True)
            rows.append(r.row(command))
    print_rows(rows, args.markdown)


if __name__ == "__main__":
    main()
