"""Parsing bounces off the event loop, in worker processes that are killed when they overrun.

The parser's patterns are linear and its input is bounded (`parse`, `mime`), but a bounce is
written by anyone holding a VERP address, so the last line of defence does not rely on that:
each parse runs in a separate process (spawned, not forked: the server has threads), the
caller waits without blocking the event loop, and a parse that exceeds its time limit gets its
process killed and replaced, and the caller a `BounceParseTimeout`. A worker that dies
(a crash in C code, the kernel's OOM killer) gives `BounceParseCrashed`. Either way the message
is poisoned, not the server.

The report comes back as JSON-ready data rather than a pickle, so even a worker that hostile
input somehow took over cannot hand the server an object to run.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.process import BaseProcess

from postway.bounces.model import BounceReport, BounceResult
from postway.bounces.parse import note_parser_exception, parse_bounce
from postway.errors import PostwayError

Parser = Callable[[bytes], BounceReport]
_READY = b"ready"
_START_SECONDS = 120.0  # a fresh interpreter importing the parser, on a loaded machine


class BounceParseFailed(PostwayError):
    """Parsing one stored bounce did not finish; the message, not the server, is at fault."""


class BounceParseTimeout(BounceParseFailed):
    """The parse ran past its time limit; its worker process was killed."""


class BounceParseCrashed(BounceParseFailed):
    """The worker process died while parsing (killed, out of memory, a crash in C code)."""


def _serve(conn: multiprocessing.connection.Connection, parser: Parser) -> None:
    """A worker's loop: raw bytes in, the report as JSON out, until the parent hangs up."""
    conn.send_bytes(_READY)  # imported and listening: the time limit starts counting now
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        report = parser(raw)
        conn.send_bytes(json.dumps(dataclasses.asdict(report)).encode())


def _report_from(data: bytes) -> BounceReport:
    """Rebuild a report from a worker's JSON, taking only the known fields."""
    doc = json.loads(data)
    names = {f.name for f in dataclasses.fields(BounceResult)}
    results = [BounceResult(**{k: v for k, v in r.items() if k in names}) for r in doc["results"]]
    error = doc.get("parser_error")
    if error:  # the worker's safety net caught an exception: count it where /metrics is read
        note_parser_exception(str(error)[:80])
    return BounceReport(doc["kind"], results, str(error)[:80] if error else None)


class _Worker:
    """One spawned process and the parent's end of its pipe."""

    def __init__(self, parser: Parser) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=_serve, args=(child, parser), name="postway-bounce-parser", daemon=True
        )
        self.process.start()
        child.close()
        self.ready = False

    def parse(self, raw: bytes, timeout: float) -> BounceReport:
        """Parse in the worker; kills it and raises if it overruns or dies."""
        try:
            if not self.ready:
                if not self.conn.poll(_START_SECONDS) or self.conn.recv_bytes() != _READY:
                    self.kill()
                    raise BounceParseFailed("the parser process did not start")
                self.ready = True
            self.conn.send_bytes(raw)
            if not self.conn.poll(timeout):
                self.kill()
                raise BounceParseTimeout(
                    f"parsing took longer than {timeout:g} s; the parser process was stopped"
                )
            return _report_from(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self.kill()
            code = self.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise BounceParseCrashed(f"the parser process died while parsing ({how})") from exc

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def close(self) -> None:
        """Hang up (the worker exits on EOF); kill it if it does not."""
        self.conn.close()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class ParsePool:
    """`workers` parser processes, started on first use and replaced when one is killed.

    Callers on any event loop await `parse`; each parse waits in one of the pool's own threads
    (never the loop's default executor, which others need), so a queue of bounces delays only
    bounces.
    """

    def __init__(self, workers: int = 1, parser: Parser = parse_bounce) -> None:
        self._parser = parser
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="postway-bounce-parse")
        self._local = threading.local()  # each thread owns one worker process
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._closed = False

    async def parse(self, raw: bytes, timeout: float) -> BounceReport:
        """The report of `raw`, parsed in a worker process within `timeout` seconds.

        Raises BounceParseTimeout or BounceParseCrashed when the message is poisoned."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._parse, raw, timeout)

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and diagnostics)."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.alive and w.process.pid]

    def _parse(self, raw: bytes, timeout: float) -> BounceReport:
        worker = self._worker()
        try:
            return worker.parse(raw, timeout)
        except BounceParseFailed:
            self._forget(worker)
            raise

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:  # died between parses (killed from outside): not the message
            worker.kill()
            self._forget(worker)
        with self._lock:
            if self._closed:
                raise BounceParseFailed("the bounce parser is shut down")
            worker = _Worker(self._parser)
            self._workers.add(worker)
        self._local.worker = worker
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        if getattr(self._local, "worker", None) is worker:
            self._local.worker = None

    def close(self) -> None:
        """Stop every worker process; parses still queued fail."""
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers), set()
        for w in workers:
            w.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


# One pool per process, started on first use: it holds OS processes, not state, and the
# places that process bounces (the intake, `postway bounce failures --retry`) share it.
_shared: ParsePool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ParsePool:
    """The process-wide parser pool (two workers at most, fewer on one core)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ParsePool(workers=max(1, min(2, (os.cpu_count() or 1) - 1)))
            atexit.register(_shared.close)
        return _shared


async def parse_isolated(raw: bytes, timeout: float) -> BounceReport:
    """Parse one stored bounce in the shared pool (see `ParsePool.parse`)."""
    return await shared_pool().parse(raw, timeout)

