"""Throughput through the real interfaces: Postway over HTTP against Postfix over SMTP.

What it measures, in one run, on the same machine and the same kind of sink:

* Postway started exactly as the README starts it (`bash scripts/run.sh`, i.e. `postway
  serve`) with a fresh data dir, on SQLite (the default) or a fresh PostgreSQL database, every
  destination domain routed (POSTWAY_TRANSPORT) to its own Postfix `smtp-sink` on loopback.
  Set-up is done as a user would: `postway user create --admin --password-stdin`, `postway
  token create`, POST /api/v1/identities, `postway identity verify`.
* single: `wrk` posts one ~2 KB one-recipient message per POST /api/v1/messages over 32
  keep-alive connections for a fixed time. Printed: accepted/s (202s / wrk's duration), p50
  and p99 latency, every answer that was not a 202 (incl. time-outs and socket errors), the
  end-to-end rate (messages at the sinks / time from the first request to the last message
  at a sink, waiting for every accepted message), and the peak memory of the whole process
  tree (summed RSS, sampled every 0.5 s from /proc).
* batch: the same with POST /api/v1/messages/batch, 100 messages per request.
* backlog: N messages (default 100,000) queued through the batch API while only `postway
  web` runs (no delivery worker, so nothing is deferred or held), then `postway serve`
  started: the drain rate is N / (start of serve to the last message at a sink).
* 1M waiting (--million): 1,000,000 deliveries due tomorrow are added by direct SQL inserts
  copied from a row the API made (the app's shape, not its code path), then `serve` runs
  for 30 s under the single-message load while its memory is sampled.
* Postfix: a private instance (`postfix -c`) relaying to the same kind of sinks, fed by
  `smtp-source` with 20 parallel sessions in all (split over the destination domains) and
  as many ~2 KB messages as the most any Postway run accepted; its backlog is filled with
  `defer_transports = smtp`, then released (`postqueue -f`) and timed to the last delivery.
  The ratio column compares end-to-end (and drain) rates with Postfix's.

Run (as root, from the repository):

    .venv/bin/python bench/api_throughput.py                      # everything, 30 s runs
    .venv/bin/python bench/api_throughput.py --quick              # 8 s runs, 10,000 backlog
    .venv/bin/python bench/api_throughput.py --systems postway-sqlite,postfix --duration 60
    .venv/bin/python bench/api_throughput.py --million --markdown # + 1M waiting; README table

Needs: `apt-get install postfix wrk` (smtp-sink, smtp-source, postfix, wrk), root (for the
private Postfix instance), PostgreSQL at 127.0.0.1:5432 with trust auth for postway-postgres
(POSTWAY_TEST_POSTGRES_URL overrides), and `psql`. The machine's other load skews the figures:
the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_support import (  # noqa: E402
    PgDatabase,
    PostfixInstance,
    Sinks,
    TreeRss,
    body_text,
    free_port,
)

POSTWAY = ROOT / ".venv" / "bin" / "postway"
PF_BASE = Path("/tmp/postway-bench-postfix-api")
USER, PASSWORD = "bench@acme.example", "bench-password-0123"
BATCH = 100  # messages per batch request
versions: dict[str, str] = {}  # system -> the code it ran (code_version)


@dataclass
class Row:
    system: str
    workload: str
    accepted_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_202: int | None = None
    e2e_s: float | None = None
    peak_mb: float | None = None
    pss_mb: float | None = None
    note: str = ""
    stored: int = 0  # messages stored by the run (Postfix gets as many as the most of these)
    kind: str = ""  # single, batch, backlog, million: rows compared with Postfix's of the kind
    problems: list[str] = field(default_factory=list)


# --- Postway processes ------------------------------------------------------------------------


class Postway:
    """One Postway data dir (and database) and the processes started on it."""

    def __init__(self, db: str, routes: dict[str, int], tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.pg = PgDatabase() if db == "postgres" else None
        self.env = {
            **os.environ,
            "POSTWAY_DATA_DIR": str(self.data),
            "POSTWAY_TRANSPORT": ",".join(f"{d}=127.0.0.1:{p}" for d, p in routes.items()),
        }
        self.env.pop("POSTWAY_DATABASE_URL", None)
        if self.pg:
            self.env["POSTWAY_DATABASE_URL"] = self.pg.url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.token = ""
        self.identity = ""

    def start(self, role: str = "serve", extra: tuple[str, ...] = ()) -> float:
        """Starts `bash scripts/run.sh` (serve) or `postway web`, with `extra` arguments;
        returns the time it was launched, after /healthz answers."""
        n = len(self.logs)
        log = self.tmp / f"{role}-{n}.log"
        self.logs.append(log)
        if role == "serve":
            cmd = ["bash", "scripts/run.sh", "--port", str(self.port)]
        else:
            cmd = [str(POSTWAY), role, "--port", str(self.port)]
        cmd += extra
        launched = time.monotonic()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{role} exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if self.request("GET", "/healthz", auth=False)[0] == 200:
                    return launched
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{role} not ready in 60 s")

    def stop(self) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # its own children, if any are left
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [str(POSTWAY), *args], env=self.env, input=stdin.encode(), capture_output=True
        )
        if done.returncode:
            raise RuntimeError(f"postway {' '.join(args)}: {done.stderr.decode()[-1000:]}")
        return done.stdout.decode()

    def request(
        self, method: str, path: str, body: object = None, auth: bool = True
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.token}"
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def set_up(self) -> None:
        """As a new user would: admin user, token, identity through the API, verified."""
        self.cli("user", "create", USER, "--admin", "--password-stdin", stdin=PASSWORD + "\n")
        self.token = self.cli("token", "create", USER).strip().splitlines()[-1].strip()
        status, out = self.request(
            "POST", "/api/v1/identities", {"name": "Bench Sender", "email": USER}
        )
        if status != 201:
            raise RuntimeError(f"identity: {status} {out}")
        self.identity = out["id"]
        self.cli("identity", "verify", USER)

    def messages_total(self) -> int:
        status, out = self.request("GET", "/api/v1/messages?limit=1")
        if status != 200:
            raise RuntimeError(f"GET /messages: {status} {out}")
        return int(out["total"])

    def settled_total(self, quiet: float = 1.0) -> int:
        """Messages stored, once the count stops moving (requests cut off by wrk's end may
        still commit)."""
        last = self.messages_total()
        while True:
            time.sleep(quiet)
            now = self.messages_total()
            if now == last:
                return now
            last = now

    def log_problems(self) -> list[str]:
        """Distinct warning and error lines of every log so far (JSON lines at level
        warning or above; other lines naming an error, exception or traceback)."""
        seen: dict[str, int] = {}
        for log in self.logs:
            if not log.exists():
                continue
            for line in log.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict):
                    level = str(rec.get("level", ""))
                    if level not in ("warning", "error", "critical"):
                        continue
                    key = f"{level} {rec.get('logger', '')}: {rec.get('msg', '')}"[:300]
                else:
                    low = line.lower()
                    words = ("error", "critical", "traceback", "exception", "warning")
                    if not any(w in low for w in words):
                        continue
                    key = line[:300]
                seen[key] = seen.get(key, 0) + 1
        return [f"{n}x {k}" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])]

    def close(self) -> None:
        self.stop()
        if self.pg:
            self.pg.drop()


# --- wrk ---------------------------------------------------------------------------------------

LUA = r"""
-- Generated by bench/api_throughput.py: one POST per request, status codes counted per thread.
local token = [==[%TOKEN%]==]
local identity = [==[%IDENTITY%]==]
local text = [==[%TEXT%]==]
local domains = %DOMAINS%
local per_request = %PER_REQUEST%
local path = per_request > 1 and "/api/v1/messages/batch" or "/api/v1/messages"
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
local threads = {}
counter = 0
tid = 0
statuses = {}
sample = nil

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function one()
  counter = counter + 1
  local n = tid * 100000000 + counter
  return '{"identity_id":"' .. identity .. '","to":["lead' .. n .. '@d' .. (n % domains) ..
    '.bench.test"],"subject":"Bench ' .. n .. '","text":' .. text .. '}'
end

function request()
  local body
  if per_request > 1 then
    local parts = {}
    for i = 1, per_request do parts[i] = one() end
    body = '{"messages":[' .. table.concat(parts, ",") .. ']}'
  else
    body = one()
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 202 and sample == nil then sample = string.sub(body, 1, 300) end
end

function done(summary, latency, requests)
  local counts, first = {}, ""
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do counts[code] = (counts[code] or 0) + n end
    local s = t:get("sample")
    if s and first == "" then first = s end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, '"' .. code .. '":' .. n) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"duration_us":%d,"requests":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":{%s},"sample":%q}\n',
    summary.duration, summary.requests, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ","), first))
end
"""


@dataclass
class WrkResult:
    seconds: float
    accepted: int  # messages answered 202
    non_202: int  # answers that were not 202, time-outs and socket errors (in requests)
    p50_ms: float
    p99_ms: float
    sample: str


def run_wrk(
    pw: Postway, args: argparse.Namespace, per_request: int, duration: float, connections: int
) -> WrkResult:
    text = json.dumps(body_text(0, args.size))
    script = pw.tmp / f"post-{per_request}.lua"
    script.write_text(
        LUA.replace("%TOKEN%", pw.token)
        .replace("%IDENTITY%", pw.identity)
        .replace("%TEXT%", text)
        .replace("%DOMAINS%", str(args.domains))
        .replace("%PER_REQUEST%", str(per_request))
    )
    cmd = [
        "wrk", "-t", str(args.threads), "-c", str(connections), "-d", f"{duration:g}s",
        "--timeout", "60s", "-s", str(script), f"http://127.0.0.1:{pw.port}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    out = json.loads(line[len("BENCH ") :])
    ok = int(out["status"].get("202", 0))
    other = sum(int(v) for k, v in out["status"].items() if k != "202")
    errors = out["connect"] + out["read"] + out["write"] + out["timeout"]
    return WrkResult(
        seconds=out["duration_us"] / 1e6,
        accepted=ok * per_request,
        non_202=other + errors,
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        sample=out["sample"],
    )


# --- Postway runs --------------------------------------------------------------------------


def load_phase(
    pw: Postway, sinks: Sinks, args: argparse.Namespace, system: str, per_request: int
) -> Row:
    """wrk for --duration against a running `serve`, then wait for every stored message to
    reach a sink."""
    before, at_sinks = pw.messages_total(), sinks.total()
    rss = TreeRss(pw.proc.pid if pw.proc else 0)
    started = time.monotonic()
    single = per_request == 1
    conns = args.connections if single else args.batch_connections
    w = run_wrk(pw, args, per_request, args.duration if single else args.batch_duration, conns)
    stored = pw.settled_total() - before
    got, last = sinks.wait_total(at_sinks + stored, args.drain_timeout)
    peak, pss = rss.stop()
    got -= at_sinks
    label = "single" if single else "batch"
    note = f"{w.seconds:.0f} s, {conns} conns"
    if not single:
        note += f", {per_request}/request; p50/p99 per request"
    if got < stored:
        note += f"; only {got} of {stored} delivered in time"
    if w.sample:
        note += f"; first non-202: {w.sample[:120]!r}"
    return Row(
        system,
        f"{label}: wrk POST /messages{'/batch' if per_request > 1 else ''}",
        accepted_s=w.accepted / w.seconds,
        p50_ms=w.p50_ms,
        p99_ms=w.p99_ms,
        non_202=w.non_202,
        stored=stored,
        e2e_s=got / (last - started) if got and last > started else 0.0,
        peak_mb=peak,
        pss_mb=pss,
        note=note,
        kind=label,
    )


def fill_via_batch(pw: Postway, n: int, args: argparse.Namespace) -> float:
    """Queues `n` messages through POST /messages/batch (4 clients, BATCH per request);
    returns the seconds it took."""
    text = body_text(0, args.size)
    counter = iter(range(0, n, BATCH))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", pw.port, timeout=300)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {pw.token}"}
        while True:
            with lock:
                first = next(counter, None)
            if first is None:
                break
            msgs = [
                {
                    "identity_id": pw.identity,
                    "to": [f"backlog{i}@d{i % args.domains}.bench.test"],
                    "subject": f"Backlog {i}",
                    "text": text,
                }
                for i in range(first, min(first + BATCH, n))
            ]
            conn.request("POST", "/api/v1/messages/batch", json.dumps({"messages": msgs}), headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 202:
                raise RuntimeError(f"batch fill: {resp.status} {raw[:300]!r}")
        conn.close()

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(client) for _ in range(4)]:
            f.result()
    return time.monotonic() - started


def backlog_phase(pw: Postway, sinks: Sinks, args: argparse.Namespace, system: str) -> Row:
    """Fill with only the web role running, then time `serve` draining it."""
    pw.start("web")
    before = pw.messages_total()
    fill_s = fill_via_batch(pw, args.backlog, args)
    stored = pw.settled_total(0.2) - before
    pw.stop()
    at_sinks = sinks.total()
    started = pw.start("serve")
    rss = TreeRss(pw.proc.pid if pw.proc else 0)
    got, last = sinks.wait_total(at_sinks + stored, args.drain_timeout)
    peak, pss = rss.stop()
    got -= at_sinks
    note = (
        f"{stored:,} queued via the batch API to `postway web` "
        f"({stored / fill_s:.0f}/s), then `serve` started; timed from its launch"
    )
    if got < stored:
        note += f"; only {got:,} delivered in {args.drain_timeout:.0f} s"
    return Row(
        system,
        f"backlog drain {args.backlog:,}",
        e2e_s=got / (last - started) if got and last > started else 0.0,
        peak_mb=peak,
        pss_mb=pss,
        note=note,
        kind="backlog",
    )


async def add_waiting(pw: Postway, rows: int) -> float:
    """Adds `rows` deliveries due tomorrow, copied from one the API made (direct inserts:
    this set-up is not what is measured). Returns the seconds it took."""
    import uuid
    from datetime import timedelta

    from sqlalchemy import insert, select

    sys.path.insert(0, str(ROOT / "src"))
    from postway.config import Settings
    from postway.store.db import Database
    from postway.store.models import Delivery, utcnow

    settings = Settings(data_dir=pw.data, database_url=pw.env.get("POSTWAY_DATABASE_URL", ""))
    db = Database(settings.resolved_database_url())
    table = Delivery.__table__
    started = time.perf_counter()
    async with db.session() as s:
        model = dict((await s.execute(select(table).limit(1))).mappings().one())
    later = utcnow() + timedelta(days=1)
    for first in range(0, rows, 20_000):
        values = [
            {
                **model, "id": uuid.uuid4().hex, "recipient": f"wait{i}@d{i % 50}.bench.test",
                "recipient_domain": f"d{i % 50}.bench.test", "state": "deferred",
                "attempts": 1, "due_at": later, "lease_owner": None,
                "reason": None, "status": None, "reply_code": None, "diagnostic": None,
                "remote_mta": None, "hard": None,
            }
            for i in range(first, min(first + 20_000, rows))
        ]  # fmt: skip
        async with db.session() as s, s.begin():
            await s.execute(insert(table), values)
    await db.dispose()
    return time.perf_counter() - started


def million_phase(pw: Postway, sinks: Sinks, args: argparse.Namespace, system: str) -> Row:
    fill_s = asyncio.run(add_waiting(pw, args.waiting))
    pw.start("serve")
    rss = TreeRss(pw.proc.pid if pw.proc else 0)
    w = run_wrk(pw, args, 1, 30, args.connections)
    peak, pss = rss.stop()
    pw.stop()
    return Row(
        system,
        f"{args.waiting:,} waiting, 30 s of single load",
        accepted_s=w.accepted / w.seconds,
        p50_ms=w.p50_ms,
        p99_ms=w.p99_ms,
        non_202=w.non_202,
        peak_mb=peak,
        pss_mb=pss,
        note=f"rows added by direct SQL inserts ({fill_s:.0f} s), due tomorrow",
        kind="million",
    )


def code_version() -> str:
    """The commit Postway runs from, and whether src/ has changes not committed (the
    checkout may be edited while a long run goes on)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"{head or '?'}{' + uncommitted src/ changes' if dirty else ''}"


def postway_run(system: str, args: argparse.Namespace) -> list[Row]:
    versions[system] = code_version()
    tmp = Path(tempfile.mkdtemp(prefix="pw-apibench-"))
    sinks = Sinks(args.domains)
    pw = Postway(system.removeprefix("postway-"), sinks.domain_map(), tmp)
    rows: list[Row] = []
    try:
        pw.start("serve")
        pw.set_up()
        # one message first: the route works (and nothing in the timed part is a first use)
        status, out = pw.request(
            "POST",
            "/api/v1/messages",
            {"identity_id": pw.identity, "to": ["first@d0.bench.test"], "text": "hello"},
        )
        if status != 202 or sinks.wait_total(1, 60)[0] < 1:
            raise RuntimeError(f"first message not delivered: {status} {out}")
        for per_request, phase in ((1, "single"), (BATCH, "batch")):
            if phase in args.phases:
                print(f"  {system}: {phase} ...", file=sys.stderr, flush=True)
                rows.append(load_phase(pw, sinks, args, system, per_request))
                print(render([rows[-1]], False), file=sys.stderr, flush=True)
        pw.stop()
        if "backlog" in args.phases and args.backlog:
            print(f"  {system}: backlog {args.backlog:,} ...", file=sys.stderr, flush=True)
            rows.append(backlog_phase(pw, sinks, args, system))
            print(render([rows[-1]], False), file=sys.stderr, flush=True)
            pw.stop()
        if args.million:
            print(f"  {system}: {args.waiting:,} waiting ...", file=sys.stderr, flush=True)
            rows.append(million_phase(pw, sinks, args, system))
            print(render([rows[-1]], False), file=sys.stderr, flush=True)
    finally:
        pw.stop()
        problems = pw.log_problems()
        for r in rows:
            r.problems = problems
        if problems:
            kept = Path(tempfile.gettempdir()) / f"api_throughput-{system}-logs"
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir()
            for log in pw.logs:
                if log.exists():
                    shutil.copy(log, kept / log.name)
            print(f"  {system}: errors in the logs (kept in {kept}):", file=sys.stderr)
            for p in problems[:10]:
                print(f"    {p}", file=sys.stderr)
        pw.close()
        sinks.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# --- Postfix ---------------------------------------------------------------------------------


def postfix_run(args: argparse.Namespace, messages: int) -> list[Row]:
    sinks = Sinks(args.domains)
    routes = sinks.domain_map()
    recipients = [f"lead@{d}" for d in routes]
    per = max(messages // len(recipients), 1)
    rows = []
    try:
        pf = PostfixInstance(routes, PF_BASE)
        rss = TreeRss(pf.master_pid)
        started = time.monotonic()
        inject_s = pf.inject(recipients, per, args.sessions, args.size)
        got, last = sinks.wait_total(per * len(recipients), args.drain_timeout)
        peak, pss = rss.stop()
        pf.stop()
        rows.append(
            Row(
                "postfix",
                f"single: smtp-source -s {args.sessions}, {per * len(recipients):,} messages",
                accepted_s=per * len(recipients) / inject_s,
                e2e_s=got / (last - started) if got else 0.0,
                peak_mb=peak,
                pss_mb=pss,
                note=f"accepted/s: smtpd's rate as smtp-source saw it ({inject_s:.1f} s)",
                kind="single",
            )
        )
        if "backlog" in args.phases and args.backlog:
            at_sinks = sinks.total()
            per = max(args.backlog // len(recipients), 1)
            pf = PostfixInstance(routes, PF_BASE, defer=True)
            inject_s = pf.inject(recipients, per, args.sessions, args.size)
            deadline = time.monotonic() + 120
            while pf.queued() < per * len(recipients) and time.monotonic() < deadline:
                time.sleep(0.2)
            rss = TreeRss(pf.master_pid)
            started = time.monotonic()
            pf.release()
            got, last = sinks.wait_total(at_sinks + per * len(recipients), args.drain_timeout)
            peak, pss = rss.stop()
            pf.stop()
            got -= at_sinks
            note = (
                f"filled by smtp-source with defer_transports=smtp "
                f"({per * len(recipients) / inject_s:.0f}/s), then postqueue -f"
            )
            if got < per * len(recipients):
                note += f"; only {got:,} delivered in time"
            rows.append(
                Row(
                    "postfix",
                    f"backlog drain {per * len(recipients):,}",
                    e2e_s=got / (last - started) if got else 0.0,
                    peak_mb=peak,
                    pss_mb=pss,
                    note=note,
                    kind="backlog",
                )
            )
    finally:
        subprocess.run(["postfix", "-c", str(PF_BASE / "etc"), "stop"], capture_output=True)
        sinks.stop()
    return rows


# --- output ---------------------------------------------------------------------------------


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render(rows: list[Row], markdown: bool) -> str:
    base = {r.kind: r.e2e_s for r in rows if r.system == "postfix" and r.e2e_s}
    head = [
        "system", "workload", "accepted/s", "p50 ms", "p99 ms", "non-202", "end-to-end/s",
        "peak RSS MB", "peak PSS MB", "vs Postfix", "note",
    ]  # fmt: skip
    table = []
    for r in rows:
        ratio = f"{r.e2e_s / base[r.kind]:.2f}x" if r.e2e_s and base.get(r.kind) else "-"
        table.append(
            [
                r.system, r.workload, _f(r.accepted_s, ",.0f"), _f(r.p50_ms, ".0f"),
                _f(r.p99_ms, ".0f"), _f(r.non_202, "d"), _f(r.e2e_s, ",.0f"),
                _f(r.peak_mb, ".0f"), _f(r.pss_mb, ".0f"), ratio, r.note,
            ]
        )  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 8 + "---|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *table]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in [head, *table]
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--systems", default="postway-sqlite,postway-postgres,postfix")
    p.add_argument("--phases", default="single,batch,backlog", help="of single,batch,backlog")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of each wrk run")
    p.add_argument("--batch-duration", type=float, default=None, help="default: --duration")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--batch-connections", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--sessions", type=int, default=20, help="smtp-source sessions in all")
    p.add_argument("--domains", type=int, default=10, help="destination domains (one sink each)")
    p.add_argument("--size", type=int, default=2048, help="message text bytes")
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=0, help="Postfix's count (default: as Postway)")
    p.add_argument("--million", action="store_true", help="memory with 1,000,000 waiting")
    p.add_argument("--waiting", type=int, default=1_000_000, help="rows for --million")
    p.add_argument("--drain-timeout", type=float, default=1800.0)
    p.add_argument("--quick", action="store_true", help="8 s runs and a 10,000 backlog")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.duration, args.backlog = 8.0, 10_000
    args.batch_duration = args.batch_duration or args.duration
    args.phases = args.phases.split(",")
    systems = args.systems.split(",")
    load_before = Path("/proc/loadavg").read_text().strip()
    rows: list[Row] = []
    for system in [s for s in systems if s != "postfix"]:
        print(f"running {system} ...", file=sys.stderr, flush=True)
        rows += postway_run(system, args)
    if "postfix" in systems:
        stored = [r.stored for r in rows if r.kind == "single"]
        messages = args.messages or max([*stored, 2_000])
        print(f"running postfix ({messages:,} messages) ...", file=sys.stderr, flush=True)
        rows = postfix_run(args, messages) + rows
    rows.sort(key=lambda r: (["single", "batch", "backlog", "million"].index(r.kind), r.system))
    print(render(rows, args.markdown))
    for system, version in versions.items():
        print(f"{system} ran from {version}")
    print(
        f"\nloadavg before: {load_before}; after: {Path('/proc/loadavg').read_text().strip()}"
        f" ({os.cpu_count()} CPUs). end-to-end = messages at the sinks / (first request to "
        "last delivery); peak RSS / PSS = summed over the whole process tree, every 0.5 s "
        "(RSS counts shared pages once per process, PSS splits them)."
    )
    problems = sorted({p for r in rows for p in r.problems})
    if problems:
        print("errors in Postway's logs: " + "; ".join(problems[:10]))


if __name__ == "__main__":
    main()
