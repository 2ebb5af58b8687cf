"""Bounce parse time against message size, for hostile shapes and a real bounce padded out.

    .venv/bin/python bench/bounce_scaling.py [--max-mb 10] [--repeat 3]

Each row is one shape; each column a size of raw message from 1 KB to 10 MB; each cell the
best of --repeat runs of `parse_bounce` in this process (milliseconds). Linear patterns and the
caps on text read (`mime.MAX_PART_CHARS`, `parse._MAX_BYTES`) keep every row flat or linear;
before them, 20 KB of blank lines took about 30 s and 200 KB did not finish. The last column
parses the largest message through the worker pool the intake uses, time limit included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from postway.bounces.isolation import ParsePool  # noqa: E402
from postway.bounces.parse import parse_bounce  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "bounces" / "lhost-postfix-01.eml"
HEAD = (b"From: MAILER-DAEMON@mx.example\r\nTo: fbl@bounces.postway.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n")


def _plain(unit: bytes) -> Callable[[int], bytes]:
    def make(size: int) -> bytes:
        body = (unit * (size // len(unit) + 1))[: max(0, size - len(HEAD) - 2)]
        return HEAD + b"\r\n" + body
    return make


def _one_line(unit: bytes, ctype: str = "text/plain") -> Callable[[int], bytes]:
    """One long decoded line (base64 lifts SMTP's 1,000-octet line limit)."""
    def make(size: int) -> bytes:
        n = max(1, (size - 200) * 3 // 4)
        body = base64.encodebytes((unit * (n // len(unit) + 1))[:n]).replace(b"\n", b"\r\n")
        return HEAD + (f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n").encode() + body
    return make


def _addresses(size: int) -> bytes:
    out, i, n = [], 0, len(HEAD) + 2
    while n < size:
        line = f"<user{i}@host{i % 97}.example>: 550 5.1.1 no such user\r\n".encode()
        out.append(line)
        n, i = n + len(line), i + 1
    return HEAD + b"\r\n" + b"".join(out)[: max(0, size - len(HEAD) - 2)]


def _padded_corpus(size: int) -> bytes:
    """A real Postfix DSN with its returned message's body padded to `size`."""
    raw = SAMPLE.read_bytes()
    pad = max(0, size - len(raw))
    line = b"lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n"
    return raw + (line * (pad // len(line) + 1))[:pad]


SHAPES: dict[str, Callable[[int], bytes]] = {
    "blank lines": _plain(b"\r\n"),
    "'>' + spaces, 990 a line": _plain(b">" + b" " * 990 + b"\r\n"),
    "'>' + spaces, one line": _one_line(b" "),
    "'<script' never closed": _one_line(b"<script>", "text/html"),
    "'<' runs (html)": _one_line(b"<", "text/html"),
    "addresses, one a line": _addresses,
    "real DSN, padded": _padded_corpus,
}
SIZES = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]


def best_ms(raw: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        parse_bounce(raw)
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


async def pooled_ms(pool: ParsePool, raw: bytes) -> float:
    started = time.perf_counter()
    await pool.parse(raw, 60)
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-mb", type=float, default=10.0, help="largest size, in MB")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (best kept)")
    args = ap.parse_args()
    sizes = [s for s in SIZES if s <= args.max_mb * 1_000_000]
    pool = ParsePool()
    asyncio.run(pool.parse(b"Subject: warm-up\r\n\r\nhi\r\n", 120))
    labels = [f"{s // 1000} KB" if s < 1_000_000 else f"{s // 1_000_000} MB" for s in sizes]
    print(f"parse_bounce, best of {args.repeat}, milliseconds\n")
    print(f"{'shape':28}" + "".join(f"{x:>10}" for x in labels) + f"{'pool, max':>12}")
    try:
        for name, make in SHAPES.items():
            cells = [best_ms(make(size), args.repeat) for size in sizes]
            pooled = asyncio.run(pooled_ms(pool, make(sizes[-1])))
            print(f"{name:28}" + "".join(f"{c:10.1f}" for c in cells) + f"{pooled:12.1f}",
                  flush=True)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
