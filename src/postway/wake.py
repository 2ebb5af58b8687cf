"""Waking delivery workers in other processes the moment mail is accepted.

`postway serve` gives each worker one end of a datagram socket pair and the web process the
other ends: storing mail sends a byte, and an idle worker looks at the queue at once instead
of at its next poll. Nothing depends on it: a wake that is lost (a worker restarting, a full
socket buffer) only means the mail waits for that poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

MIN_INTERVAL = 0.002  # a busy worker needs no more than one wake per few milliseconds


class WakeSender:
    def __init__(self, fds: list[int]) -> None:
        self._socks = [socket.socket(fileno=fd) for fd in fds]
        for s in self._socks:
            s.setblocking(False)
        self._sent_at = 0.0

    def wake(self) -> None:
        now = time.monotonic()
        if now - self._sent_at < MIN_INTERVAL:
            return
        self._sent_at = now
        for s in self._socks:
            with contextlib.suppress(OSError):  # full buffer, worker gone: it will poll
                s.send(b"!")

    def close(self) -> None:
        for s in self._socks:
            s.close()


class WakeListener:
    def __init__(self, fd: int, on_wake: Callable[[], None]) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._on_wake = on_wake
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            while self._sock.recv(64):  # drain every wake sent so far: one look serves all
                pass
        self._on_wake()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def parse_fds(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]
