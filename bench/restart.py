"""Restart correctness: stop and start `postway serve` while thousands of messages wait, some
mid-backoff, and check that nothing is sent early, nothing is lost, nothing is sent twice and
retry times are kept. Prints one reliability row per database (bench/reliability_rows.py).

    .venv/bin/python bench/restart.py --database sqlite,postgres --messages 10000 \
        [--restarts N] [--mode term|kill] [--markdown]

One run: `postway serve` is started as the README starts it (`bash scripts/run.sh`), set up
as a user would (user, token, identity through the API, verified), with every domain routed
(POSTWAY_TRANSPORT) to one SMTP peer of its own process (bench/restart_sink.py) that logs
every RCPT and every message it accepts, by Message-ID, with the time. --messages messages,
one recipient each, are accepted through POST /api/v1/messages/batch while it runs:

  70 %  now.restart.test      accepted at once
  20 %  backoff.restart.test  451 at the first RCPT, accepted at the retry; the first retry
                              is POSTWAY_RETRY_BASE_SECONDS +-10 % later: --retry-base (45 s),
                              or 3x the measured start-up of `serve` + 15 s when longer
  10 %  hold.restart.test     451 at every RCPT: deferred again and again (next try 45 s,
                              then 90 s, ... after each), still waiting at the end

The peer takes --data-delay seconds per message and Postway opens at most
--max-connections sessions to it, so the queue is still draining when the last batch is
accepted. Then the server is stopped mid-stream, --restarts times, --gap seconds apart:
`term` sends SIGTERM to `postway serve` (its graceful stop), `kill` SIGKILLs its whole process
group (a crash; POSTWAY_LEASE_SECONDS is --lease, so the dead worker's leases run out within
the run). Every delivery's state, attempts, next attempt (due_at) and lease are read from the
database once every process has ended, and again as soon as the new `serve` answers.

Checked (any breach is printed and makes the row's `errors` cell non-zero):
  * lost: every accepted message to now/backoff reached the peer and is `delivered`; every
    hold message is `deferred`, never accepted by the peer.
  * sent twice: each Message-ID accepted once. With `kill`, a message accepted by the peer
    before the kill while its delivery was still leased (the result died with the worker:
    the "outcome unknown after the final dot" case) may come again; other copies are errors.
  * sent early: after each stop, the first attempt (RCPT) at each waiting recipient is no
    earlier than the next attempt time recorded at the stop (a lease's expiry, for mail a
    killed worker held), less 0.25 s; a backoff recipient's retry comes at least 90 % of the
    first retry delay after its first attempt; a delivery recorded as delivered is not tried
    again.
  * retry times kept: every waiting delivery not attempted since the stop has the same state,
    attempts and next attempt time once the new server runs; one attempted since was due.
  * term only: no delivery is left leased by the stopped worker.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]

from api_throughput import Postway  # noqa: E402
from bench_support import free_port, wait_port  # noqa: E402
from reliability_rows import ReliabilityRow, print_rows  # noqa: E402

NOW, BACKOFF, HOLD = "now.restart.test", "backoff.restart.test", "hold.restart.test"
BATCH = 250  # messages per batch request
CLIENTS = 4
EARLY_TOLERANCE = 0.25  # seconds: sink and database read the same clock
JITTER = 0.1  # RetryPolicy's default spread


def group_of(i: int) -> str:
    return BACKOFF if i % 10 in (0, 1) else HOLD if i % 10 == 2 else NOW


@dataclass(frozen=True)
class Row:
    state: str
    attempts: int
    due_at: float | None  # epoch seconds
    lease_owner: str | None


@dataclass
class Snapshot:
    taken: float  # time.time() when the read began
    rows: dict[str, Row]  # recipient -> its delivery

    def count(self, pred: object) -> int:
        return sum(1 for r in self.rows.values() if pred(r))  # type: ignore[operator]


@dataclass
class Stop:
    mode: str
    at: float  # time.time() once every process of the server had ended
    before: Snapshot  # read after the stop
    after: Snapshot | None = None  # read as soon as the new server answered
    delivered_before: int = 0  # messages at the peer when the stop began


@dataclass
class Result:
    database: str
    mode: str
    messages: int = 0  # accepted (202)
    non_202: int = 0
    stops: list[Stop] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    allowed_duplicates: int = 0  # the after-the-final-dot case of a kill
    early: int = 0
    changed: int = 0  # waiting deliveries whose retry time the restart changed
    kept: int = 0  # waiting deliveries checked unchanged across a restart
    mid_backoff: int = 0  # deferred with a retry still ahead when the new server answered
    leased_after_stop: int = 0
    retry_base: float = 0.0  # the first retry delay the run used
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def problem(self, text: str) -> None:
        if len(self.problems) < 40:
            self.problems.append(text)

    @property
    def errors(self) -> str:
        words = [
            f"{self.non_202} non-202",
            f"{self.early} early",
            f"{self.changed} retry times changed",
        ]
        if self.mode == "term":
            words.append(f"{self.leased_after_stop} left leased")
        if self.allowed_duplicates:
            words.append(f"{self.allowed_duplicates} copies after the final dot (allowed)")
        text = ", ".join(words)
        return text + (f"; {len(self.problems)}+ problems" if self.problems else "")


# --- the peer ---------------------------------------------------------------------------------


class Sink:
    """bench/restart_sink.py in a process of its own; `events()` reads its log."""

    def __init__(self, tmp: Path, data_delay: float) -> None:
        self.port = free_port()
        self.log = tmp / "sink.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen(
            [
                sys.executable, str(HERE / "restart_sink.py"), "--port", str(self.port),
                "--log", str(self.log), "--backoff", BACKOFF, "--hold", HOLD,
                "--data-delay", str(data_delay),
            ],
            stderr=(tmp / "sink.err").open("wb"),
        )  # fmt: skip
        wait_port(self.port)

    def events(self) -> list[list[object]]:
        out = []
        with self.log.open() as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
        return out

    def accepted(self) -> Counter[str]:
        return Counter(str(e[2]) for e in self.events() if e[0] == "data")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the database -----------------------------------------------------------------------------


async def _read(pw: Postway, events_of: frozenset[str] = frozenset()) -> dict[str, Row]:
    from sqlalchemy import select

    from postway.config import Settings
    from postway.store.db import Database
    from postway.store.models import Delivery, DeliveryEvent

    url = pw.env.get("POSTWAY_DATABASE_URL", "")
    db = Database(Settings(data_dir=pw.data, database_url=url).resolved_database_url())
    try:
        async with db.session() as s:
            rows = await s.execute(
                select(
                    Delivery.recipient,
                    Delivery.state,
                    Delivery.attempts,
                    Delivery.due_at,
                    Delivery.lease_owner,
                )
            )
            found = {
                r: Row(st, a, due.timestamp() if due else None, lease)
                for r, st, a, due, lease in rows.all()
            }
            if events_of:  # the history of these recipients' deliveries, for a post-mortem
                history = await s.execute(
                    select(
                        Delivery.recipient,
                        DeliveryEvent.created_at,
                        DeliveryEvent.type,
                        DeliveryEvent.state,
                        DeliveryEvent.detail,
                    )
                    .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
                    .where(Delivery.recipient.in_(sorted(events_of)))
                    .order_by(DeliveryEvent.id)
                )
                with (pw.tmp / "events.jsonl").open("w") as out:
                    for r, at, kind, state, detail in history.all():
                        out.write(json.dumps([r, at.timestamp(), kind, state, detail]) + "\n")
            return found
    finally:
        await db.dispose()


def snapshot(pw: Postway, events_of: frozenset[str] = frozenset()) -> Snapshot:
    """Every delivery as the database has it; `events_of`: also write the events of these
    recipients' deliveries to events.jsonl in the run's folder."""
    taken = time.time()
    with ThreadPoolExecutor(1) as pool:  # its own loop, whatever the caller runs
        return Snapshot(taken, pool.submit(asyncio.run, _read(pw, events_of)).result())


# --- filling ----------------------------------------------------------------------------------


def fill(pw: Postway, numbers: list[int], result: Result) -> dict[str, str]:
    """Posts one one-recipient message for each of `numbers` through the batch API (CLIENTS
    clients, BATCH per request); returns recipient -> Message-ID header of each accepted."""
    accepted: dict[str, str] = {}
    lock = threading.Lock()
    starts = iter(range(0, len(numbers), BATCH))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", pw.port, timeout=120)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {pw.token}"}
        while True:
            with lock:
                first = next(starts, None)
            if first is None:
                break
            msgs = [
                {
                    "identity_id": pw.identity,
                    "to": [f"r{i}@{group_of(i)}"],
                    "subject": f"Restart {i}",
                    "text": f"Message {i} of the restart check.\n",
                }
                for i in numbers[first : first + BATCH]
            ]
            conn.request("POST", "/api/v1/messages/batch", json.dumps({"messages": msgs}), headers)
            resp = conn.getresponse()
            raw = resp.read()
            with lock:
                if resp.status != 202:
                    result.non_202 += 1
                    result.problem(f"batch answered {resp.status}: {raw[:200]!r}")
                    continue
                for m in json.loads(raw):
                    for d in m["deliveries"]:
                        accepted[d["recipient"]] = m["message_id_header"]
        conn.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(client) for _ in range(CLIENTS)]:
            f.result()
    return accepted


# --- the run ----------------------------------------------------------------------------------


def _gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes of group {pgid} still run")


def stop_server(pw: Postway, mode: str) -> float:
    """Stops `serve` (SIGTERM, or SIGKILL to its whole process group); returns the time
    every one of its processes had ended."""
    assert pw.proc is not None
    pgid = pw.proc.pid
    if mode == "kill":
        os.killpg(pgid, signal.SIGKILL)
        pw.proc.wait()
        pw.proc = None
    else:
        pw.stop()
    _gone(pgid)
    return time.time()


def run(
    database: str,
    messages: int,
    *,
    mode: str = "term",
    restarts: int = 1,
    gap: float = 4.0,
    retry_base: float = 45.0,
    lease: float = 15.0,
    data_delay: float = 0.005,
    max_connections: int = 4,
    settle_timeout: float = 300.0,
    log: bool = False,
) -> Result:
    def say(text: str) -> None:
        if log:
            print(f"  [{database} {mode} {time.monotonic() - began:5.1f}s] {text}", file=sys.stderr)

    began = time.monotonic()
    result = Result(database, mode)
    tmp = Path(tempfile.mkdtemp(prefix="pw-restart-"))
    sink = Sink(tmp, data_delay)
    pw = Postway(database, {NOW: sink.port, BACKOFF: sink.port, HOLD: sink.port}, tmp)
    keep = ("POSTWAY_DATA_DIR", "POSTWAY_TRANSPORT", "POSTWAY_DATABASE_URL")
    pw.env = {k: v for k, v in pw.env.items() if not k.startswith("POSTWAY_") or k in keep}
    pw.env.update(
        POSTWAY_RETRY_BASE_SECONDS=str(retry_base),
        POSTWAY_WORKER_POLL_SECONDS="0.2",
        POSTWAY_MTA_MAX_CONNECTIONS=str(max_connections),
        POSTWAY_LOG_LEVEL="WARNING",
    )
    if mode == "kill":
        pw.env["POSTWAY_LEASE_SECONDS"] = str(lease)
    try:
        launched = time.monotonic()
        pw.start("serve")
        start_seconds = time.monotonic() - launched
        pw.set_up()
        # The first retry must come after a restart is over, or no mail is mid-backoff when
        # the new server runs: on a busy machine `serve` takes long to start, so the delay
        # grows with the start-up just measured (then `serve` starts again with it).
        retry_base = max(retry_base, 3 * start_seconds + 15)
        result.retry_base = retry_base
        pw.env["POSTWAY_RETRY_BASE_SECONDS"] = str(retry_base)
        pw.stop()
        pw.start("serve")
        say(f"serve started in {start_seconds:.1f} s; first retry {retry_base:.0f} s")
        # the backoff group first, so it is mid-backoff (first try done) when the server stops
        say("serving; filling the backoff group")
        accepted = fill(pw, [i for i in range(messages) if group_of(i) == BACKOFF], result)
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            tried = {str(e[2]) for e in sink.events() if e[0] == "rcpt"}
            if tried >= set(accepted):
                break
            time.sleep(0.2)
        say(f"{len(accepted)} backoff messages tried once; filling the rest")
        accepted |= fill(pw, [i for i in range(messages) if group_of(i) != BACKOFF], result)
        result.messages = len(accepted)
        say(f"{len(accepted)} accepted; {sum(sink.accepted().values())} at the peer")
        expect_delivered = {r: mid for r, mid in accepted.items() if not r.endswith("@" + HOLD)}
        for k in range(restarts):
            if k:
                time.sleep(gap)
            at_peer = sum(sink.accepted().values())
            at = stop_server(pw, mode)
            before = snapshot(pw)
            stop = Stop(mode, at, before, delivered_before=at_peer)
            result.stops.append(stop)
            waiting = before.count(lambda r: r.due_at is not None)
            leased = before.count(lambda r: r.lease_owner is not None)
            say(f"stop {k + 1}: {at_peer} at the peer, {waiting} waiting, {leased} leased")
            pw.start("serve")
            stop.after = snapshot(pw)
            say(f"started again {stop.after.taken - at:.1f} s after the stop")
        # settle: every message to now/backoff at the peer
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            got = sink.accepted()
            if all(got[mid] for mid in expect_delivered.values()):
                break
            time.sleep(0.5)
        time.sleep(2.0)  # a copy sent late would arrive meanwhile
        pw.stop()
        final = snapshot(pw)
        say("settled; checking")
        check(result, accepted, sink.events(), final, result.retry_base)
        if result.problems:  # keep the history of the deliveries named
            named = frozenset(r for r in accepted if any(r + ":" in p for p in result.problems))
            snapshot(pw, named)
    finally:
        pw.stop()
        sink.stop()
        pw.close()
        result.seconds = time.monotonic() - began
        if result.problems:
            kept = Path(tempfile.gettempdir()) / f"restart-{database}-{mode}-logs"
            kept.mkdir(exist_ok=True)
            for f in [*pw.logs, sink.log, tmp / "events.jsonl"]:
                if f.exists():
                    (kept / f.name).write_bytes(f.read_bytes())
            say(f"problems; logs kept in {kept}")
        if not os.environ.get("RESTART_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def check(
    result: Result,
    accepted: dict[str, str],
    events: list[list[object]],
    final: Snapshot,
    retry_base: float,
) -> None:
    rcpts: dict[str, list[float]] = defaultdict(list)  # recipient -> RCPT times, in order
    arrivals: dict[str, list[float]] = defaultdict(list)  # Message-ID -> acceptance times
    for e in events:
        if e[0] == "rcpt":
            rcpts[str(e[2])].append(float(e[1]))  # type: ignore[arg-type]
        elif e[0] == "data":
            arrivals[str(e[2])].append(float(e[1]))  # type: ignore[arg-type]
    by_mid = {mid: r for r, mid in accepted.items()}

    # lost, and the states things end in
    for r, mid in accepted.items():
        row = final.rows.get(r)
        if r.endswith("@" + HOLD):
            if arrivals.get(mid) or row is None or row.state != "deferred":
                result.lost += 1
                result.problem(f"{r}: held mail ended {row.state if row else 'missing'}")
        elif not arrivals.get(mid) or row is None or row.state != "delivered":
            result.lost += 1
            result.problem(
                f"{r}: {len(arrivals.get(mid, []))} at the peer, {row.state if row else 'no row'}"
            )
    for mid in arrivals:
        if mid not in by_mid:
            result.problem(f"the peer got {mid}, which no 202 named")

    # sent twice
    for mid, times in arrivals.items():
        extra = len(times) - 1
        if extra <= 0:
            continue
        r = by_mid.get(mid, "")
        explained = sum(
            1
            for s in result.stops
            if s.mode == "kill"
            and (row := s.before.rows.get(r)) is not None
            and row.lease_owner is not None
            and any(t < s.at for t in times)
            and any(t > s.at for t in times)
        )
        allowed = min(extra, explained)
        result.duplicated += extra
        result.allowed_duplicates += allowed
        if extra > allowed:
            result.problem(f"{r} ({mid}) accepted {len(times)} times at {times}")

    # sent early, and the retry schedule across the restart
    for s in result.stops:
        for r, row in s.before.rows.items():
            later = [t for t in rcpts.get(r, []) if t > s.at]
            if row.due_at is None:
                if later:
                    result.early += 1
                    result.problem(f"{r}: tried again at {later[0]:.3f} after it was {row.state}")
                continue
            if later and later[0] < row.due_at - EARLY_TOLERANCE:
                result.early += 1
                result.problem(
                    f"{r}: tried {row.due_at - later[0]:.1f} s early after the stop "
                    f"(due {row.due_at:.3f}, tried {later[0]:.3f}, lease {row.lease_owner})"
                )
    for r, times in rcpts.items():
        gap = times[1] - times[0] if len(times) >= 2 else retry_base
        if r.endswith("@" + BACKOFF) and gap < retry_base * (1 - JITTER) - EARLY_TOLERANCE:
            result.early += 1
            result.problem(f"{r}: retried {gap:.1f} s after the 451")

    # retry times kept across each restart; leases a graceful stop left behind
    for s in result.stops:
        after = s.after
        if after is None:
            continue
        for r, row in s.before.rows.items():
            if row.due_at is None:
                continue
            if s.mode == "term" and row.lease_owner is not None:
                result.leased_after_stop += 1
                result.problem(f"{r}: still leased by {row.lease_owner} after a graceful stop")
            now_row = after.rows.get(r)
            if now_row is None:
                result.changed += 1
                result.problem(f"{r}: gone after the restart")
            elif now_row.attempts == row.attempts:
                if now_row != row:
                    result.changed += 1
                    result.problem(f"{r}: {row} at the stop, {now_row} after the restart")
                else:
                    result.kept += 1
                    if row.due_at > after.taken and row.state == "deferred":
                        result.mid_backoff += 1
            elif row.due_at > after.taken + EARLY_TOLERANCE:
                result.changed += 1
                result.problem(f"{r}: attempted after the restart before it was due ({row})")


def row_of(r: Result, command: str) -> ReliabilityRow:
    stops = r.stops
    waiting = sum(s.before.count(lambda x: x.due_at is not None) for s in stops)
    faults = (
        f"{len(stops)} {'SIGTERM' if r.mode == 'term' else 'SIGKILL (process group)'} "
        f"restart(s) mid-stream; {waiting:,} waiting at the stops, {r.mid_backoff:,} "
        f"mid-backoff, {r.kept:,} retry times kept"
    )
    return ReliabilityRow(
        scenario="restart" if r.mode == "term" else "crash restart",
        database=r.database,
        runs=1,
        messages=r.messages,
        faults=faults,
        lost=r.lost,
        duplicated=r.duplicated,
        errors=r.errors,
        command=command,
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--database", default="sqlite,postgres")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--mode", default="term", help="term, kill or term,kill")
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--gap", type=float, default=4.0, help="seconds between restarts")
    p.add_argument("--retry-base", type=float, default=45.0)
    p.add_argument("--lease", type=float, default=15.0, help="lease seconds (kill mode)")
    p.add_argument("--data-delay", type=float, default=0.005)
    p.add_argument("--max-connections", type=int, default=4)
    p.add_argument("--settle-timeout", type=float, default=300.0)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    command = "bench/restart.py " + " ".join(sys.argv[1:])
    rows = []
    for mode in args.mode.split(","):
        for database in args.database.split(","):
            r = run(
                database,
                args.messages,
                mode=mode,
                restarts=args.restarts,
                gap=args.gap,
                retry_base=args.retry_base,
                lease=args.lease,
                data_delay=args.data_delay,
                max_connections=args.max_connections,
                settle_timeout=args.settle_timeout,
                log=True,
            )
            for problem in r.problems:
                print(f"  {database} {mode}: {problem}", file=sys.stderr)
            print(f"  {database} {mode}: {r.seconds:.0f} s", file=sys.stderr)
            rows.append(row_of(r, command))
    print_rows(rows, args.markdown)


if __name__ == "__main__":
    main()
