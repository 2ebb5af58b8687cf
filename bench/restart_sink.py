"""A loopback SMTP peer for bench/restart.py, run as its own process (so it neither shares
the harness's interpreter lock nor dies with a server under test) and logging every attempt:

    python bench/restart_sink.py --port P --log FILE [--backoff DOMAIN] [--hold DOMAIN]
                                 [--data-delay SECONDS]

Recipients at the --backoff domain are answered `451` at RCPT the first time each address is
seen and accepted afterwards; recipients at the --hold domain are always answered `451`; every
other recipient is accepted. Each RCPT and each accepted message is one JSON line in FILE:

    ["rcpt", time, recipient, code]       every RCPT, with the code it got
    ["data", time, message_id, [rcpts]]   every message accepted after the final dot

(time is `time.time()` when the command arrived; message_id is the Message-ID header). Lines
are written as they happen and flushed every 50 ms and at SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session

MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class Recorder:
    def __init__(self, out: IO[str], backoff: str, hold: str, data_delay: float) -> None:
        self.out = out
        self.backoff = backoff.lower()
        self.hold = hold.lower()
        self.data_delay = data_delay
        self.seen: set[str] = set()

    def _log(self, *fields: Any) -> None:
        self.out.write(json.dumps(fields) + "\n")

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        now = time.time()
        domain = address.rsplit("@", 1)[-1].lower()
        code = "250 2.1.5 OK"
        if domain == self.hold:
            code = "451 4.7.1 held: try again later"
        elif domain == self.backoff and address.lower() not in self.seen:
            self.seen.add(address.lower())
            code = "451 4.7.1 greylisted: try again later"
        self._log("rcpt", now, address, int(code[:3]))
        if code.startswith("250"):
            envelope.rcpt_tos.append(address)
        return code

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        raw = envelope.original_content or b""
        head = raw.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(head)
        key = found.group(1).decode(errors="replace").strip() if found else ""
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        self._log("data", now, key, list(envelope.rcpt_tos))
        return "250 2.0.0 OK"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--backoff", default="backoff.restart.test")
    p.add_argument("--hold", default="hold.restart.test")
    p.add_argument("--data-delay", type=float, default=0.0)
    args = p.parse_args()
    out = open(args.log, "a", buffering=1 << 20)  # noqa: SIM115, ASYNC230 (before serving)
    recorder = Recorder(out, args.backoff, args.hold, args.data_delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="sink.restart.test", data_size_limit=None),
        "127.0.0.1",
        args.port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    server.close()
    out.flush()
    out.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
