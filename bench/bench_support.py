"""Shared pieces of the delivery benchmarks: loopback `smtp-sink` counters, a private Postfix
instance relaying to them, memory sampling of a process tree, and throwaway PostgreSQL
databases. Used by bench/api_throughput.py and bench/throughput.py.

Needs Debian's postfix package (smtp-sink, smtp-source, postfix) and root for the Postfix
instance (it runs its daemons as the postfix user).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

PG_SERVER = os.environ.get(
    "POSTWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def body_text(i: int, size: int) -> str:
    """Plain text of exactly `size` characters (ASCII, no quotes or backslashes: safe to put
    into JSON as is)."""
    line = "Postway throughput benchmark line, padding the body to the chosen size.\n"
    text = f"Message {i}\n" + line * (size // len(line) + 1)
    return text[:size]


# --- sinks -----------------------------------------------------------------------------------

_MESG = re.compile(rb"mesg=(\d+)")


class Sinks:
    """One `smtp-sink` per destination domain on loopback. Each runs with `-c` (a running
    counter on stdout, rewritten after every message); a reader thread per sink keeps the
    latest count and the moment it last grew, so a run can be timed to its last delivery
    without knowing the message count beforehand."""

    def __init__(self, domains: int) -> None:
        self.ports = [free_port() for _ in range(domains)]
        self.counts = [0] * domains
        self.last_change = 0.0
        self._lock = threading.Lock()
        self.procs = [
            subprocess.Popen(
                ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{p}", "1024"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for p in self.ports
        ]
        for i, proc in enumerate(self.procs):
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()
        for p in self.ports:
            wait_port(p)

    def domain_map(self, fmt: str = "d{i}.bench.test") -> dict[str, int]:
        return {fmt.format(i=i): p for i, p in enumerate(self.ports)}

    def _read(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            found = _MESG.findall(chunk)
            if found:
                n = int(found[-1])
                with self._lock:
                    if n > self.counts[i]:
                        self.counts[i] = n
                        self.last_change = time.monotonic()

    def total(self) -> int:
        with self._lock:
            return sum(self.counts)

    def wait_total(self, n: int, timeout: float, stall: float = 120.0) -> tuple[int, float]:
        """Wait until the sinks have `n` messages in all, `timeout` passes, or nothing
        arrives for `stall` seconds. Returns (messages received, time of the last one)."""
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got, last = sum(self.counts), self.last_change
            if got >= n:
                break
            if time.monotonic() - max(last, began) > stall:  # nothing new in this wait
                break
            time.sleep(0.05)
        with self._lock:
            return sum(self.counts), self.last_change

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait()


# --- memory ----------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and every process descending from it (read from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may itself hold spaces or parentheses
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_memory_kb(root: int) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over the tree. RSS counts a shared page once per process that
    maps it (Postfix's hundred small daemons share most of theirs); PSS splits it between
    them."""
    rss = pss = 0
    for pid in process_tree(root):
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
        except (OSError, IndexError, ValueError):
            continue
    return rss, pss


class TreeRss:
    """Peak of the summed resident memory (RSS, and PSS) of a whole process tree, sampled every
    `every` seconds. `root` is a pid or a callable returning one (None while not known),
    for daemons like Postfix's master whose pid is read from a file."""

    def __init__(self, root: int | Callable[[], int | None], every: float = 0.5) -> None:
        self.root = root
        self.every = every
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            root = self.root() if callable(self.root) else self.root
            if root:
                rss, pss = tree_memory_kb(root)
                self.peak_kb = max(self.peak_kb, rss)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
                self.samples += 1
            self._stop.wait(self.every)

    def stop(self) -> tuple[float, float]:
        """Stops sampling; the peaks of RSS and PSS in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024, self.peak_pss_kb / 1024


# --- PostgreSQL ------------------------------------------------------------------------------


class PgDatabase:
    """A fresh database on the benchmark's PostgreSQL server, dropped by `drop()`."""

    def __init__(self, prefix: str = "pw_bench") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._psql(f'CREATE DATABASE "{self.name}"')
        self.url = PG_SERVER.rsplit("/", 1)[0] + "/" + self.name

    @staticmethod
    def _psql(sql: str) -> None:
        subprocess.run(
            ["psql", PG_SERVER, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True,
            capture_output=True,
        )

    def drop(self) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- Postfix ---------------------------------------------------------------------------------


class PostfixInstance:
    """A private Postfix (`postfix -c <dir>`) listening on a loopback port, relaying every
    `dN.bench.test` domain to its sink through a transport map. `defer=True` starts it with
    `defer_transports = smtp` (mail is queued, not sent) until `release()`."""

    def __init__(self, routes: dict[str, int], base: Path, defer: bool = False) -> None:
        self.base = base
        self.etc, self.spool, self.data = base / "etc", base / "spool", base / "data"
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        for d in (self.etc, self.spool, self.data):
            d.mkdir(parents=True)
        shutil.chown(self.data, "postfix")
        self.port = free_port()
        master = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            cols = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(cols) >= 8:
                if cols[0] == "smtp" and cols[1] == "inet":
                    cols[0] = f"127.0.0.1:{self.port}"
                cols[4] = "n"  # no chroot: the private queue has no jail set up
                line = " ".join(cols)
            master.append(line)
        (self.etc / "master.cf").write_text("\n".join(master) + "\n")
        (self.etc / "transport").write_text(
            "".join(f"{d} smtp:[127.0.0.1]:{p}\n" for d, p in routes.items())
        )
        (self.etc / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
myhostname = bench.postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {" ".join(routes)}
transport_maps = texthash:{self.etc / "transport"}
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {base / "maillog"}
maillog_file_prefixes = /var, /dev/stdout, {base}
biff = no
defer_transports = {"smtp" if defer else ""}
"""
        )
        main_cf = Path("/etc/postfix/main.cf")
        default = main_cf.read_text()
        if str(self.etc) not in default:  # postfix -c needs the instance named in the default
            main_cf.write_text(default + f"\nalternate_config_directories = {self.etc}\n")
        self._postfix("check")
        self._postfix("start")
        wait_port(self.port)

    def _postfix(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), *args], check=True, capture_output=True)

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queued(self) -> int:
        """Messages in the queue files (incoming, active, deferred, hold)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(self.spool / sub):
                n += len(files)
        return n

    def inject(self, recipients: list[str], per_recipient: int, sessions: int, size: int) -> float:
        """`smtp-source` sending `per_recipient` messages of `size` bytes to each recipient
        address (one process per address, the sessions split between them); returns the
        seconds the injection took."""
        share = max(sessions // len(recipients), 1)
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    "smtp-source", "-s", str(share), "-l", str(size), "-m", str(per_recipient),
                    "-f", "bench@acme.example", "-t", rcpt, f"127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for rcpt in recipients
        ]  # fmt: skip
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise RuntimeError(f"smtp-source failed: {err.decode(errors='replace')}")
        return time.monotonic() - started

    def release(self) -> None:
        """Lift `defer_transports` and flush the deferred queue."""
        subprocess.run(
            ["postconf", "-c", str(self.etc), "-e", "defer_transports ="],
            check=True,
            capture_output=True,
        )
        self._postfix("reload")
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], check=True, capture_output=True)

    def delays(self) -> list[float]:
        """Per-message delays (seconds, from the maillog) of the messages sent."""
        log = self.base / "maillog"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [float(m.group(1)) for m in re.finditer(r"delay=([\d.]+),.*status=sent", text)]

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)
