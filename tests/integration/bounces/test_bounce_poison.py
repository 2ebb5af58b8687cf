"""Poisoned bounces: mail written to make the parser slow must not freeze the server, and a
message whose parse overruns is failed for review once, not retried at every start.

The serving test runs `postway bounce-server` as a real process and talks SMTP to it; its
assertions are outcomes (a greeting and a NOOP answered while the poison is processed, the row
processed or failed), never durations.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys

import aiosmtplib
import pytest
from bounce_support import FEEDBACK, send
from sqlalchemy import select

from peers.smtp import free_port
from postway.bounces.apply import process_pending, reprocess_failed, store_bounce
from postway.bounces.intake import BounceIntake
from postway.store.models import BounceMessage

SECRET = "test-secret-key-for-postway-tests-0123456789"  # make_settings' key
HEAD = (
    f"From: reporter@mx.example\r\nTo: {FEEDBACK}\r\nSubject: Undelivered Mail\r\n"
    "Message-ID: <poison@mx.example>\r\n"
)


def blank_lines(size: int) -> bytes:
    """The review's attack: a body of nothing but blank lines."""
    return HEAD.encode() + b"\r\n" + b"\r\n" * (size // 2)


def quote_then_spaces(size: int) -> bytes:
    """A ">" and a run of spaces on one line (base64 lets the line be any length)."""
    body = base64.encodebytes(b">" + b" " * size)
    return (HEAD + "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + body.replace(b"\n", b"\r\n")


def quoted_space_lines(size: int) -> bytes:
    """Lines of ">" and 990 spaces, each within SMTP's line limit."""
    line = b">" + b" " * 990 + b"\r\n"
    return HEAD.encode() + b"\r\n" + line * (size // len(line))


async def rows(env) -> list[BounceMessage]:
    async with env.rt.db.reader() as s:  # a reader: never queued behind the server's writes
        return list(await s.scalars(select(BounceMessage).order_by(BounceMessage.received_at)))


async def settled_while_serving(env, port: int) -> BounceMessage:
    """The one stored row once it has left `received`; until then, every round opens a new
    SMTP session that must be greeted and have its NOOP answered (a frozen server fails
    there, a server that never finishes fails when the rounds run out)."""
    for _ in range(600):
        assert await greets_and_answers(port) == (220, 250)
        found = await rows(env)
        if found and found[0].status != "received":
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"bounce still unprocessed: {[(r.id, r.status) for r in found]}")


async def greets_and_answers(port: int) -> tuple[int, int]:
    """A fresh SMTP session: the greeting's code and the NOOP reply's code."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    greeting = await smtp.connect()
    noop = await smtp.noop()
    await smtp.quit()
    return greeting.code, noop.code


def start_bounce_server(env, database_url: str, port: int) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    environ.update(
        POSTWAY_DATA_DIR=str(env.rt.settings.data_dir),
        POSTWAY_DATABASE_URL=database_url,
        POSTWAY_SECRET_KEY=SECRET,
        POSTWAY_HOSTNAME="postway.test",
        POSTWAY_BOUNCE_DOMAIN="bounces.postway.test",
        POSTWAY_FEEDBACK_ADDRESS=FEEDBACK,
        POSTWAY_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "bounce-server", "--host", "127.0.0.1",
         "--port", str(port)],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


async def listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in range(50):
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.startswith("Bounce intake (SMTP)"):
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the bounce server did not start")


@pytest.mark.parametrize(
    "poison",
    [blank_lines(20_000), blank_lines(200_000), quote_then_spaces(200_000),
     quoted_space_lines(200_000)],
    ids=["blank-20k", "blank-200k", "quote-spaces-200k", "quoted-space-lines-200k"],
)  # fmt: skip
async def test_a_poisoned_bounce_does_not_freeze_the_bounce_server(env, database_url, poison):
    port = free_port()
    proc = start_bounce_server(env, database_url, port)
    try:
        await listening(proc)
        _, reply = await send(port, FEEDBACK, poison, sender="reporter@mx.example")
        assert reply.startswith("2.0.0 OK")
        # While the poison is being processed, and after: new sessions are served.
        row = await settled_while_serving(env, port)
        # Settled: kept for review (it names no delivery) or failed, never left `received`.
        assert row.status in ("unmatched", "failed") and row.error
        assert await greets_and_answers(port) == (220, 250)
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()  # a frozen server never runs its SIGTERM handler
            await asyncio.to_thread(proc.wait, 30)


async def test_a_parse_past_the_limit_fails_the_message_once_for_review(env):
    env.rt.settings.bounce_parse_timeout_seconds = 0.01  # a 1 MB message takes far longer
    huge = HEAD.encode() + b"\r\n" + b"\r\n" * 500_000
    (bounce_id,) = await store_bounce(
        env.rt.db, mail_from="", rcpt_tos=[FEEDBACK], peer="192.0.2.7", raw=huge
    )
    intake = BounceIntake(env.rt.db, env.rt.settings)
    await intake.start("127.0.0.1", 0)  # start-up runs the unfinished row
    try:
        await intake.drain()
    finally:
        await intake.stop()
    (row,) = await rows(env)
    assert (row.id, row.status) == (bounce_id, "failed")
    assert "longer than 0.01 s" in row.error and "not retried automatically" in row.error
    failed_at = row.processed_at

    # The next start leaves it alone: only `received` rows are run again.
    assert await process_pending(env.rt.db, env.rt.settings) == []
    (row,) = await rows(env)
    assert (row.status, row.processed_at) == ("failed", failed_at)

    # Run by hand with room to finish, it parses, names no delivery and stays listed.
    env.rt.settings.bounce_parse_timeout_seconds = 60
    (done,) = await reprocess_failed(env.rt.db, env.rt.settings)
    assert done.status == "unmatched" and "longer than" not in (done.error or "")
