"""`postway serve`: one command that uses every core. The web app and the delivery workers
run as child processes (`postway web`, `postway worker`) started, watched and stopped
together, the way Postfix's master runs its services: a child that dies is started again, one
that keeps dying at start-up stops the whole server with its error on the console, and the
children go with the parent however it ends (SIGTERM to them even when it is SIGKILLed).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from postway.config import Settings

log = logging.getLogger("postway")

QUICK_EXIT_SECONDS = 5.0  # a child that ends sooner than this after its start failed to start
QUICK_EXITS_ALLOWED = 3
STOP_GRACE_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


def worker_count(settings: Settings, requested: int | None) -> int:
    """SQLite has one writer, so one worker; PostgreSQL gets one per core the web leaves."""
    if requested:
        return requested
    if settings.resolved_database_url().startswith("sqlite"):
        return 1
    return max(1, (os.cpu_count() or 2) - 1)


def _die_with_parent() -> None:
    # Linux only; elsewhere children are still stopped by the parent's normal shutdown
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0
    restarts: int = 0
    fds: tuple[int, ...] = field(default=())  # inherited: its ends of the wake sockets
    restart_argv: list[str] | None = None  # what a restart runs, when not `argv` again

    def start(self) -> None:
        argv = self.restart_argv if self.restarts and self.restart_argv else self.argv
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and entry point)
            argv,
            pass_fds=self.fds,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.started = time.monotonic()


def children_for(host: str, port: int, bounce_port: int, workers: int) -> list[Child]:
    """The web child and `workers` worker children, each worker joined to the web by a
    datagram socket pair (see `wake`); the pairs outlive restarts of either side."""
    entry = [sys.executable, "-m", "postway"]
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
    _KEEP.extend(pairs)  # open for the life of the supervisor
    send_ends = tuple(a.fileno() for a, _ in pairs)
    web_argv = [*entry, "web", "--host", host, "--port", str(port)]
    if send_ends:
        web_argv += ["--wake-fds", ",".join(map(str, send_ends))]
    # the first web process says where to go once it listens; a restarted one says nothing
    kids = [Child("web", web_argv, fds=send_ends, restart_argv=[*web_argv, "--supervised"])]
    for i, (_, listen_end) in enumerate(pairs):
        argv = [*entry, "worker", "--host", host, "--supervised"]
        argv += ["--wake-fds", str(listen_end.fileno())]
        if i == 0 and bounce_port:
            argv += ["--bounce-port", str(bounce_port)]  # one intake, in the first worker
        kids.append(Child(f"worker-{i + 1}", argv, fds=(listen_end.fileno(),)))
    return kids


_KEEP: list[tuple[socket.socket, socket.socket]] = []


def supervise(children: list[Child]) -> int:
    """Run the children until SIGTERM/SIGINT; returns the exit status for `postway serve`."""
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for child in children:
            child.start()
        while not stopping:
            time.sleep(0.2)
            for child in children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or stopping:
                    continue
                quick = time.monotonic() - child.started < QUICK_EXIT_SECONDS
                child.quick_exits = child.quick_exits + 1 if quick else 0
                if child.quick_exits >= QUICK_EXITS_ALLOWED:
                    print(
                        f"postway: {child.name} keeps failing at start-up (exit {code}); "
                        "stopping. Its error is above.",
                        file=sys.stderr,
                        flush=True,
                    )
                    stopping, status = True, 1
                    break
                print(
                    f"postway: {child.name} ended (exit {code}); starting it again",
                    file=sys.stderr,
                    flush=True,
                )
                child.restarts += 1
                child.start()
    finally:
        _stop_all(children)
        for s, handler in old.items():
            signal.signal(s, handler)
    return status


def _stop_all(children: list[Child]) -> None:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in running:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def serve(settings: Settings, host: str, port: int, bounce_port: int, workers: int | None) -> int:
    """Migrate the database (in a short-lived child, so this process stays small), then run
    web and workers as children; the web child says where to go once it listens."""
    migrate = subprocess.run(  # noqa: S603 (our own entry point)
        [sys.executable, "-m", "postway", "db", "upgrade"],
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        print(migrate.stdout + migrate.stderr, file=sys.stderr, end="", flush=True)
        return migrate.returncode
    n = worker_count(settings, workers)
    print(f"Serving with 1 web process and {n} delivery worker process(es).", flush=True)
    return supervise(children_for(host, port, bounce_port, n))
