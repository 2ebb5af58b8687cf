"""An SMTP sink on loopback that accepts everything and counts each message by a header
(Message-ID by default), so a harness can tell delivered, lost and duplicated mail apart.
aiosmtpd in a thread of the harness: enough for the tens to hundreds of messages a second
the reliability harnesses send (smtp-sink is faster but cannot say which message came)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from bench_support import free_port

_HEADERS = BytesHeaderParser()


class RecordingSink:
    def __init__(self, header: str = "Message-ID", delay: float = 0.0) -> None:
        self.header = header
        self.delay = delay  # seconds after the final dot before the message is taken (250)
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}  # key -> time.time() of its first arrival
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=free_port(), ready_timeout=10)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> RecordingSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            # a sender that hangs up meanwhile cancels this: the message is not taken
            await asyncio.sleep(self.delay)
        raw = envelope.original_content or b""
        key = str(_HEADERS.parsebytes(raw).get(self.header, "")).strip()
        now = time.time()
        with self._lock:
            self.counts[key] += len(envelope.rcpt_tos) or 1
            self.first_seen.setdefault(key, now)
        return "250 OK"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def received(self) -> int:
        with self._lock:
            return sum(self.counts.values())
