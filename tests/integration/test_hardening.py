"""Hardening: no CDN-loaded API docs outside the demo, logged-in pages never cached, files only
Postway's user can read (from the moment they exist), a relay test that cannot be held open,
and /metrics that no forwarding header can talk into trusting a client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from served import served_postway

from postway.store.users import create_user, create_web_session
from postway.web.deps import SESSION_COOKIE


async def test_api_docs_are_off_outside_the_demo(env):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await env.app_client.get(path)).status_code == 404, path
    assert (await env.app_client.get("/openapi.json")).status_code == 200


async def test_logged_in_pages_are_not_stored_by_caches(env):
    async with env.rt.db.session() as s, s.begin():
        user = await create_user(s, "ada@acme.example", "correct horse battery")
        cookie, _ = await create_web_session(s, user)
    client = env.app_client
    client.cookies.set(SESSION_COOKIE, cookie)
    for path in ("/conversations", "/conversations?tab=failed", "/compose", "/identities"):
        r = await client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["cache-control"] == "no-store", path
    missing = await client.get("/messages/nope")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"


# Run in a child process: an audit hook cannot be removed once added. At every file event
# inside the data dir (open, mkdir, chmod, rename, link, ...) the hook looks at every file
# and folder there, so a file that exists world-readable for a moment (created, then chmod)
# is caught at the chmod, not only at the end.
_FILE_MODES_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, stat, sys
    from pathlib import Path

    import aiosmtplib

    data = Path(sys.argv[1])
    seen_open = []

    def look():
        if not data.exists():
            return
        for p in [data, *data.rglob("*")]:
            try:
                mode = stat.S_IMODE(p.lstat().st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077:
                seen_open.append([str(p.relative_to(data.parent)), oct(mode)])

    EVENTS = {"open", "os.mkdir", "os.chmod", "os.rename", "os.link", "os.remove"}
    busy = []

    def hook(event, args):
        if event in EVENTS and not busy and any(str(data) in str(a) for a in args):
            busy.append(1)  # look() itself raises audit events
            try:
                look()
            finally:
                busy.clear()

    sys.addaudithook(hook)
    os.umask(0o022)

    from postway.config import Settings
    from postway.demo import LocalInbox
    from postway.mta.dkim import load_or_create_key
    from postway.store.db import Database

    async def main():
        settings = Settings(data_dir=data)
        settings.resolved_secret_key()
        db = Database(settings.resolved_database_url())
        await db.upgrade()
        await db.dispose()
        load_or_create_key(data, "bounces.postway.test", "postway", "ed25519-sha256")
        inbox = LocalInbox(data / "inbox")
        await inbox.start()
        await aiosmtplib.send(
            b"From: a@b.example\\r\\nTo: c@d.example\\r\\nSubject: x\\r\\n\\r\\nhello\\r\\n",
            sender="a@b.example", recipients=["c@d.example"], hostname="127.0.0.1",
            port=inbox.port,
        )
        await inbox.aclose()

    asyncio.run(main())
    look()
    modes = {
        str(p.relative_to(data.parent)): oct(stat.S_IMODE(p.lstat().st_mode))
        for p in [data, *data.rglob("*")]
    }
    print(json.dumps({"modes": modes, "seen_open": seen_open}))
    """
)


async def test_data_dir_key_database_and_inbox_are_private_from_creation(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _FILE_MODES_SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    modes = report["modes"]
    assert modes["data"] == "0o700"
    assert modes["data/inbox"] == "0o700"
    for name in ("data/secret.key", "data/postway.db", "data/dkim_ed25519_private_key.pem"):
        assert modes[name] == "0o600", (name, modes)
    mails = [name for name in modes if name.endswith(".eml")]
    assert len(mails) == 1 and modes[mails[0]] == "0o600", modes
    # SQLite's side files take the database file's mode
    assert all(m == "0o600" for n, m in modes.items() if n.startswith("data/postway.db")), modes
    # nothing in the data dir was ever readable by others, not even for a moment
    assert report["seen_open"] == [], report["seen_open"]


# --- the relay connection test cannot be held open -------------------------------------------


async def _stall_at_auth(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An SMTP peer that greets, offers AUTH, and never answers the AUTH command."""
    writer.write(b"220 stall.test ESMTP\r\n")
    await writer.drain()
    while line := await reader.readline():
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"EHLO":
            writer.write(b"250-stall.test\r\n250 AUTH PLAIN LOGIN\r\n")
        elif verb == b"AUTH":
            _stalled.append(line)
            await asyncio.Event().wait()  # until the client hangs up and we are cancelled
        else:
            writer.write(b"250 OK\r\n")
        await writer.drain()


_stalled: list[bytes] = []


async def test_relay_test_gives_up_at_its_deadline_when_auth_stalls(env):
    server = await asyncio.start_server(_stall_at_auth, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # each SMTP command may wait 300 s (RFC 5321); the test as a whole only 1 s
    env.rt.settings.smtp_command_timeout = 300.0
    env.rt.settings.relay_test_timeout = 1.0
    acct = await env.account("ada@acme.example")
    try:
        r = await acct.client.post(
            "/api/v1/delivery-channel/smtp/test",
            json={
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "username": "ada",
                "password": "relay-pass-123",
                "auth": "plain",
            },
        )
    finally:
        server.close()
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] is False and result["step"] == "auth", result
    assert "timed out after 1 seconds" in result["message"], result
    assert _stalled and _stalled[0].upper().startswith(b"AUTH PLAIN")


# --- /metrics and forwarding headers --------------------------------------------------------


FORWARDED_AS_LOCAL = [
    {"X-Forwarded-For": "127.0.0.1"},
    {"Forwarded": "for=127.0.0.1"},
    {"X-Real-IP": "127.0.0.1"},
]


@pytest.mark.parametrize("trust", ["", "*"])
async def test_metrics_trust_no_forwarding_header(tmp_path: Path, trust: str):
    # FORWARDED_ALLOW_IPS is uvicorn's own setting: whatever it says, the served app must
    # take the socket's peer as the client and refuse loopback trust to proxied requests
    extra = {"FORWARDED_ALLOW_IPS": trust} if trust else {}
    with served_postway(tmp_path, **extra) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            assert (await client.get("/metrics")).status_code == 200
            for headers in FORWARDED_AS_LOCAL:
                r = await client.get("/metrics", headers=headers)
                assert r.status_code == 401, headers
                assert "metrics token" in r.json()["error"]
            # a client elsewhere claiming to be local through the header gets nothing either
            r = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
            assert r.status_code == 401


async def test_metrics_token_works_through_a_proxy(tmp_path: Path):
    with served_postway(tmp_path, POSTWAY_METRICS_TOKEN="m-token-0123456789") as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            assert (await client.get("/metrics")).status_code == 401
            ok = await client.get(
                "/metrics",
                headers={
                    "Authorization": "Bearer m-token-0123456789",
                    "X-Forwarded-For": "1.2.3.4",
                },
            )
            assert ok.status_code == 200 and "postway" in ok.text
