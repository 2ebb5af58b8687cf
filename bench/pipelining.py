"""Pipelining gain of the managed channel's SMTP session (RFC 2920).

Sends N one-recipient messages over one reused session to a scripted aiosmtpd server, once
with PIPELINING offered and once without, through a loopback proxy that delays every chunk
by a one-way latency, and prints a table. Run: `.venv/bin/python bench/pipelining.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.smtp import ScriptedSMTPServer  # noqa: E402
from postway.mta.pool import PoolConfig, SessionPool  # noqa: E402
from postway.mta.resolver import MailHost, Route  # noqa: E402
from postway.mta.smtp_client import Timeouts  # noqa: E402

HEAD = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n"
MSG = HEAD + (b"x" * 76 + b"\r\n") * 30  # ~2.4 kB, lines within RFC 5322's limit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while chunk := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def latency_proxy(target_port: int, delay: float) -> asyncio.Server:
    """A TCP proxy on 127.0.0.1 adding `delay` seconds each way (per chunk, in order)."""

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(_pipe(cr, sw, delay), _pipe(sr, cw, delay))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def run(messages: int, delay: float, pipelining: bool) -> float:
    omit = () if pipelining else ("PIPELINING",)
    async with ScriptedSMTPServer(omit_extensions=omit) as srv:
        proxy = await latency_proxy(srv.port, delay)
        port = proxy.sockets[0].getsockname()[1]
        route = Route("example.org", (MailHost("mx.example.org", ("127.0.0.1",), port),), "mx")
        pool = SessionPool(PoolConfig(timeouts=Timeouts.scaled(30), max_messages=10_000))
        await pool.deliver(route, "b@bounces.test", ["r@example.org"], MSG)  # warm session
        start = time.perf_counter()
        for i in range(messages):
            attempt = await pool.deliver(route, "b@bounces.test", [f"r{i}@example.org"], MSG)
            assert attempt.result.data is not None and attempt.result.data.ok
        elapsed = time.perf_counter() - start
        await pool.aclose()
        proxy.close()
        assert len(srv.received) == messages + 1
    return elapsed


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--delays-ms", default="0,5,20")
    args = ap.parse_args()
    print(f"{args.messages} messages, 1 recipient each, one reused session (RSET between)")
    print(f"{'one-way delay':>14} | {'sequential':>11} | {'pipelined':>10} | {'speed-up':>8}")
    print("-" * 55)
    for ms in (float(x) for x in args.delays_ms.split(",")):
        seq = await run(args.messages, ms / 1000, pipelining=False)
        pip = await run(args.messages, ms / 1000, pipelining=True)
        print(
            f"{ms:>11.0f} ms | {seq * 1000 / args.messages:>8.2f} ms | "
            f"{pip * 1000 / args.messages:>7.2f} ms | {seq / pip:>7.2f}x"
        )
    print("(per message; RSET, MAIL, RCPT, DATA, dot = 5 round trips sequential, 3 pipelined)")


if __name__ == "__main__":
    asyncio.run(main())
