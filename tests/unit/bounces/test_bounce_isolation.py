"""The parser pool: parses in a spawned process, kills a parse that overruns its limit or a
worker that dies, and carries on with a fresh worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from postway.bounces.isolation import BounceParseCrashed, BounceParseTimeout, ParsePool
from postway.bounces.model import BounceReport
from postway.bounces.parse import parse_bounce

CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"


# Parsers run in the worker process (spawned: they are imported there by name).
def hang(raw: bytes) -> BounceReport:
    while True:
        time.sleep(1)


def die(raw: bytes) -> BounceReport:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def echo_or_hang(raw: bytes) -> BounceReport:
    if raw == b"hang":
        hang(raw)
    return parse_bounce(raw)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_reports_match_the_parser_in_process():
    pool = ParsePool()
    try:
        for path in sorted(CORPUS.glob("*.eml"))[:40]:
            raw = path.read_bytes()
            assert await pool.parse(raw, 60) == parse_bounce(raw), path.name
    finally:
        pool.close()


async def test_an_overrunning_parse_is_killed_and_the_next_gets_a_fresh_worker():
    pool = ParsePool(parser=echo_or_hang)
    try:
        sample = (CORPUS / "lhost-postfix-01.eml").read_bytes()
        assert (await pool.parse(sample, 60)).kind == "bounce"
        (first,) = pool.pids()
        with pytest.raises(BounceParseTimeout, match="longer than 0.5 s"):
            await pool.parse(b"hang", 0.5)
        assert _gone(first) and pool.pids() == []
        assert (await pool.parse(sample, 60)) == parse_bounce(sample)
        assert pool.pids() not in ([], [first])
    finally:
        pool.close()


async def test_a_worker_that_dies_is_reported_as_a_crash():
    pool = ParsePool(parser=die)
    try:
        with pytest.raises(BounceParseCrashed, match="signal 9"):
            await pool.parse(b"anything", 60)
        assert pool.pids() == []
    finally:
        pool.close()


async def test_close_stops_every_worker():
    pool = ParsePool(workers=2)
    await pool.parse(b"Subject: x\r\n\r\nhello\r\n", 60)
    pids = pool.pids()
    assert pids
    pool.close()
    assert all(_gone(p) for p in pids)
