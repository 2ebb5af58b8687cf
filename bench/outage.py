"""Database trouble under a running `postway serve`, with mail posted through the HTTP API
all along; prints one reliability row per scenario (bench/reliability_rows.py).

    .venv/bin/python bench/outage.py [--scenario pg-down,disk-full,locked] [--down 30]
                                     [--rate 20] [--markdown]

pg-down    PostgreSQL (a server of the harness's own, on its own port) stopped for --down
           seconds, then started again.
disk-full  SQLite's data folder on a small tmpfs (needs root to mount), filled to the last
           byte for --down seconds, then freed.
locked     SQLite with three other processes taking the write lock (BEGIN IMMEDIATE, held
           0.2-1.5 s) over and over for --down seconds.

Checked in each: what the API answered (202; 503 with Retry-After while the database cannot
store; never a 500), that the worker processes were not restarted (the system recovers by
itself), that every message acknowledged with a 202 reached the sink exactly once, the
worker's CPU seconds while the database was away (a worker spinning on a dead database would
burn its core) and how many "database unavailable" lines and tracebacks the log holds.
tests/integration/test_database_outage.py runs the same scenarios with the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from api_throughput import Postway  # noqa: E402
from recording_sink import RecordingSink  # noqa: E402
from reliability_rows import ReliabilityRow, print_rows  # noqa: E402
from served import children_of  # noqa: E402

from peers.own_postgres import OwnPostgres  # noqa: E402

DOMAIN = "outage.bench.test"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    scenario: str
    database: str
    down_seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    no_retry_after: int = 0  # 503 answers without a Retry-After header
    transport_errors: int = 0  # requests with no HTTP answer at all
    accepted: list[str] = field(default_factory=list)  # Message-ID of every 202
    lost: list[str] = field(default_factory=list)
    lost_detail: list[str] = field(default_factory=list)  # what the API says of each lost one
    duplicated: int = 0
    unacknowledged_delivered: int = 0  # reached the sink without a 202 (answer lost)
    restarted: list[str] = field(default_factory=list)  # roles whose pid changed
    worker_cpu_down: float = 0.0  # CPU seconds of the workers while the database was away
    unavailable_lines: int = 0
    tracebacks: int = 0
    settle_seconds: float = 0.0
    locks_taken: int = 0  # "locked": times the other processes held the write lock
    slowest: float = 0.0  # the longest answer, seconds

    @property
    def errors(self) -> str:
        other = sum(n for s, n in self.statuses.items() if s not in (202, 503))
        words = [f"{self.statuses.get(503, 0)} 503", f"{other} other"]
        if self.transport_errors:
            words.append(f"{self.transport_errors} no answer")
        return ", ".join(words)

    def row(self, command: str) -> ReliabilityRow:
        faults = {
            "pg-down": f"PostgreSQL stopped {self.down_seconds:.0f} s",
            "disk-full": f"data folder full {self.down_seconds:.0f} s",
            "locked": f"3 processes held the write lock {self.locks_taken} times in "
            f"{self.down_seconds:.0f} s",
        }[self.scenario]
        return ReliabilityRow(
            scenario=f"database: {self.scenario}",
            database=self.database,
            runs=1,
            messages=len(self.accepted),
            faults=faults,
            lost=len(self.lost),
            duplicated=self.duplicated,
            errors=f"{self.errors}; worker CPU {self.worker_cpu_down:.2f} s while away",
            command=command,
        )


class Poster:
    """Posts one message at a time through POST /api/v1/messages at a steady rate, from its
    own thread, until stopped; keeps every answer."""

    def __init__(self, pw: Postway, result: Result, rate: float) -> None:
        self.pw = pw
        self.result = result
        self.gap = 1.0 / rate
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poster:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _post(self, n: int) -> None:
        body = {
            "identity_id": self.pw.identity,
            "to": [f"lead{n}@{DOMAIN}"],
            "subject": f"Outage {n}",
            "text": f"Message {n} of the outage harness.",
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.pw.port, timeout=120)
        started = time.monotonic()
        try:
            conn.request(
                "POST",
                "/api/v1/messages",
                body=json.dumps(body).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.pw.token}",
                },
            )
            resp = conn.getresponse()
            raw = resp.read()
        except OSError:
            with self._lock:
                self.result.transport_errors += 1
            return
        finally:
            conn.close()
        with self._lock:
            self.result.slowest = max(self.result.slowest, time.monotonic() - started)
            self.result.statuses[resp.status] += 1
            if resp.status == 202:
                self.result.accepted.append(json.loads(raw)["message_id_header"])
            elif resp.status == 503 and not resp.getheader("Retry-After"):
                self.result.no_retry_after += 1

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._post(self.sent)
            self.sent += 1
            next_at += self.gap
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _children(pw: Postway) -> dict[str, int]:
    assert pw.proc is not None
    return children_of(pw.proc.pid)


def _settle(sink: RecordingSink, result: Result, seconds: float) -> None:
    """Wait until every acknowledged message reached the sink (or the time is up), then
    count lost, duplicated and unacknowledged ones."""
    started = time.monotonic()
    wanted = set(result.accepted)
    while time.monotonic() - started < seconds:
        if wanted <= set(sink.snapshot()):
            break
        time.sleep(0.5)
    result.settle_seconds = time.monotonic() - started
    time.sleep(1.0)  # a late duplicate would land now
    got = sink.snapshot()
    result.lost = sorted(wanted - set(got))
    result.duplicated = sum(n - 1 for n in got.values() if n > 1)
    result.unacknowledged_delivered = len(set(got) - wanted)


def _explain(pw: Postway, lost: list[str]) -> list[str]:
    """The deliveries of messages that never arrived, as the API lists them."""
    wanted, found, offset = set(lost), [], 0
    while wanted and offset is not None:
        status, page = pw.request("GET", f"/api/v1/messages?limit=100&offset={offset}")
        if status != 200:
            return [f"GET /api/v1/messages: {status}"]
        for m in page["items"]:
            if m["message_id_header"] in wanted:
                for d in m["deliveries"]:
                    found.append(
                        f"{m['message_id_header']}: {d['state']} attempts={d['attempts']} "
                        f"next={d['next_attempt_at']} reason={d['reason']} {d['diagnostic']}"
                    )
        offset = page["next_offset"]
    return found


def _read_log(pw: Postway, result: Result) -> None:
    for log in pw.logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        result.unavailable_lines += text.count("database unavailable")
        result.tracebacks += text.count("Traceback")


@contextlib.contextmanager
def _running(
    scenario: str, database: str, tmp: Path, database_url: str | None, data_dir: Path | None
) -> Iterator[tuple[Postway, RecordingSink]]:
    sink = RecordingSink().start()
    pw = Postway("sqlite", {DOMAIN: sink.port}, tmp)
    if data_dir is not None:
        pw.data = data_dir
        pw.env["POSTWAY_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        pw.env["POSTWAY_DATABASE_URL"] = database_url
    pw.env["POSTWAY_LOG_LEVEL"] = "WARNING"
    try:
        pw.start("serve")
        pw.set_up()
        yield pw, sink
    finally:
        pw.close()
        sink.stop()


def _run(
    scenario: str,
    database: str,
    down: float,
    rate: float,
    tmp: Path,
    fault: tuple[Callable[[], None], Callable[[], None]],
    *,
    database_url: str | None = None,
    data_dir: Path | None = None,
) -> Result:
    """Post for 5 s, hold the fault for `down` seconds (posting on through the first third,
    then quiet so the worker's CPU is its own), end it, post 5 s more, settle."""
    begin, end = fault
    result = Result(scenario, database, down)
    with _running(scenario, database, tmp, database_url, data_dir) as (pw, sink):
        before = _children(pw)
        poster = Poster(pw, result, rate).start()
        time.sleep(5)
        begin()
        time.sleep(down / 3)
        poster.stop()
        workers = [pid for role, pid in before.items() if role.startswith("worker")]
        cpu0 = sum(cpu_seconds(p) for p in workers)
        time.sleep(down - down / 3)
        result.worker_cpu_down = sum(cpu_seconds(p) for p in workers) - cpu0
        end()
        poster = Poster(pw, result, rate).start()
        time.sleep(5)
        poster.stop()
        _settle(sink, result, 120)
        result.lost_detail = _explain(pw, result.lost)
        after = _children(pw)
        result.restarted = sorted(r for r, p in before.items() if after.get(r) != p)
        _read_log(pw, result)
    return result


def pg_down(tmp: Path, down: float = 30, rate: float = 20) -> Result:
    pg = OwnPostgres()
    pg.start()
    try:
        return _run("pg-down", "postgres", down, rate, tmp, (pg.stop, pg.start),
                    database_url=pg.url())  # fmt: skip
    finally:
        pg.remove()


def disk_full(tmp: Path, down: float = 15, rate: float = 20) -> Result:
    mount = tmp / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    filler = mount / "filler"

    def fill() -> None:
        # Fill to the last block (unbuffered: nothing left over to flush on close).
        with filler.open("wb", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while f.write(b"\0" * size):
                        pass

    try:
        return _run("disk-full", "sqlite", down, rate, tmp, (fill, filler.unlink),
                    data_dir=mount / "data")  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class Lockers:
    """Other processes taking SQLite's write lock over and over, as a second writer (an
    admin script, a backup tool, another Postway command) would."""

    def __init__(self, db_file: Path, n: int = 3) -> None:
        self.db_file = db_file
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, __file__, "--lock-loop", str(self.db_file)])
            for _ in range(self.n)
        ]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def lock_loop(db_file: str) -> None:
    conn = sqlite3.connect(db_file, timeout=60, isolation_level=None)
    taken = Path(db_file).with_name("lock-taken")  # a byte per lock held, for the report
    while True:
        conn.execute("BEGIN IMMEDIATE")
        with taken.open("ab") as f:
            f.write(b".")
        time.sleep(random.uniform(0.2, 1.5))
        conn.execute("ROLLBACK")
        time.sleep(random.uniform(0.05, 0.3))


def locked(tmp: Path, down: float = 20, rate: float = 20) -> Result:
    lockers = Lockers(tmp / "data" / "postway.db")
    result = _run("locked", "sqlite", down, rate, tmp, (lockers.start, lockers.stop))
    taken = tmp / "data" / "lock-taken"
    result.locks_taken = taken.stat().st_size if taken.exists() else 0
    return result


SCENARIOS: dict[str, Callable[..., Result]] = {
    "pg-down": pg_down,
    "disk-full": disk_full,
    "locked": locked,
}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--lock-loop":
        lock_loop(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="pg-down,disk-full,locked")
    ap.add_argument("--down", type=float, default=30.0, help="seconds each fault lasts")
    ap.add_argument("--rate", type=float, default=20.0, help="messages posted per second")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    command = "python bench/outage.py " + " ".join(sys.argv[1:])
    rows = []
    for name in args.scenario.split(","):
        with tempfile.TemporaryDirectory(prefix=f"pw-outage-{name}-") as tmp:
            r = SCENARIOS[name](Path(tmp), down=args.down, rate=args.rate)
        print(
            f"{name}: answers {dict(r.statuses)}, 503 without Retry-After {r.no_retry_after}, "
            f"no answer {r.transport_errors}, restarted {r.restarted or 'none'}, "
            f"slowest answer {r.slowest:.2f} s, locks taken by others {r.locks_taken}, "
            f"worker CPU while away {r.worker_cpu_down:.2f} s, 'database unavailable' lines "
            f"{r.unavailable_lines}, tracebacks {r.tracebacks}, settled in "
            f"{r.settle_seconds:.1f} s, lost {len(r.lost)}, duplicated {r.duplicated}, "
            f"delivered without a 202 {r.unacknowledged_delivered}",
            *r.lost_detail,
            sep="\n",
            flush=True,
        )
        rows.append(r.row(command))
    print_rows(rows, args.markdown)


if __name__ == "__main__":
    main()
