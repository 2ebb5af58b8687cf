"""The console: readable lines when standard error is a terminal, JSON lines when it is a
pipe (or as POSTWAY_LOG_FORMAT says), each with the delivery id where there is one. Checked
on a real `postway worker` delivering through a relay, with a pseudo-terminal and a pipe."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import select
import subprocess
import sys
import time

import pytest

from postway.logs import setup_logging


def _read_until(fd: int, needle: str, timeout: float = 30.0) -> str:
    """What arrives on `fd` until a line holding `needle` is complete (or the time is up)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other side closed
            break
        if not chunk:
            break
        data += chunk
        text = data.decode(errors="replace")
        if needle in text and text.rstrip(" ").endswith("\n"):
            return text
    return data.decode(errors="replace")


def _worker(env: dict[str, str], stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "worker"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_worker_logs_text_on_a_terminal_and_json_on_a_pipe(env, smtp_server):
    srv = await smtp_server()
    acct, identity_id = await env.relay_sender(srv.port, "ops@acme.example")
    settings = env.rt.settings
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    child_env.update(
        POSTWAY_DATA_DIR=str(settings.data_dir),
        POSTWAY_DATABASE_URL=settings.database_url,
        POSTWAY_SECRET_KEY=settings.secret_key,
        POSTWAY_HOSTNAME="postway.test",
        POSTWAY_ALLOW_PRIVATE_RELAYS="1",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )

    async def send(to: str) -> str:
        r = await acct.client.post(
            "/api/v1/messages", json={"identity_id": identity_id, "to": [to], "text": "hi"}
        )
        assert r.status_code == 202, r.text
        return str(r.json()["deliveries"][0]["id"])

    # standard error is a terminal: readable lines with key=value context
    delivery = await send("a@client.example")
    master, slave = os.openpty()
    proc = _worker(child_env, slave)
    os.close(slave)
    try:
        text = await asyncio.to_thread(_read_until, master, f"delivery_id={delivery}")
    finally:
        _stop(proc)
        os.close(master)
    line = next((ln for ln in text.splitlines() if f"delivery_id={delivery}" in ln), None)
    assert line is not None, text
    assert f"postway.delivery: delivery {delivery} sent" in line
    assert "state=sent" in line and "message_id=" in line
    assert not line.lstrip().startswith("{")

    # standard error is a pipe: one JSON object per line
    delivery = await send("b@client.example")
    proc = _worker(child_env, subprocess.PIPE)
    assert proc.stderr is not None
    try:
        text = await asyncio.to_thread(_read_until, proc.stderr.fileno(), delivery)
    finally:
        _stop(proc)
        proc.stderr.close()
    records = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    mine = [r for r in records if r.get("delivery_id") == delivery]
    assert mine and mine[0]["state"] == "sent" and mine[0]["message_id"]
    assert mine[0]["logger"] == "postway.delivery"

    # configured: JSON even on a terminal
    delivery = await send("c@client.example")
    master, slave = os.openpty()
    proc = _worker({**child_env, "POSTWAY_LOG_FORMAT": "json"}, slave)
    os.close(slave)
    try:
        text = await asyncio.to_thread(_read_until, master, delivery)
    finally:
        _stop(proc)
        os.close(master)
    assert any(
        json.loads(ln).get("delivery_id") == delivery
        for ln in text.splitlines()
        if ln.strip().startswith("{")
    ), text


@contextlib.contextmanager
def _captured(fmt: str, stream: io.TextIOBase):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("INFO", fmt, stream)  # type: ignore[arg-type]
        yield
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_text_lines_quote_values_and_keep_one_line_per_record():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty, _captured("auto", tty):
        logging.getLogger("postway.test").warning(
            "relay said no",
            extra={"delivery_id": "d1", "diagnostic": 'a "quoted"\nanswer', "attempt": 2},
        )
        tty.flush()
        text = _read_until(master, "attempt=2")
    os.close(master)
    line = text.strip()
    assert "WARNING postway.test: relay said no  delivery_id=d1" in line
    assert 'diagnostic="a \\"quoted\\"\\nanswer"' in line and "\n" not in line

