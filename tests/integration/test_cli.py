"""The `postway` command line, run as a real subprocess against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from postway.config import Settings
from postway.runtime import Runtime
from postway.web.app import create_app

POSTWAY = [sys.executable, "-m", "postway"]


def cli_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(tmp_path / "data"),
        POSTWAY_DATABASE_URL=database_url,
        POSTWAY_SECRET_KEY="cli-test-secret-0123456789abcdef",
        POSTWAY_ALLOW_PRIVATE_RELAYS="1",
        POSTWAY_HOSTNAME="postway.test",
        POSTWAY_RETRY_BASE_SECONDS="0.05",
        COLUMNS="200",
    )
    env.update(extra)
    return env


async def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*POSTWAY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_user_token_identity_and_send_from_the_cli(tmp_path, database_url, smtp_server):
    env = cli_env(tmp_path, database_url)
    r = await run(env, "db", "upgrade")
    assert r.returncode == 0, r.stderr
    r = await run(env, "user", "create", "Ada@Acme.example", "--admin", stdin="s3cret-passw0rd\n")
    assert r.returncode == 0, r.stderr
    assert "created user ada@acme.example (admin)" in r.stderr
    r = await run(env, "user", "create", "ada@acme.example", stdin="s3cret-passw0rd\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = await run(env, "user", "create", "bob@acme.example", stdin="short\n")
    assert r.returncode == 1 and "at least 8 characters" in r.stderr
    r = await run(env, "token", "create", "ada@acme.example")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("pw_") and len(token) > 40

    # the token works against the API served from the same database
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="cli-test-secret-0123456789abcdef",
        allow_private_relays=True,
    )
    rt = Runtime(settings)
    await rt.start()
    srv = await smtp_server()
    try:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            r = await api.post(
                "/api/v1/identities", json={"name": "Ada", "email": "ada@acme.example"}
            )
            assert r.status_code == 201
            r = await api.put(
                "/api/v1/delivery-channel",
                json={
                    "channel": "smtp",
                    "smtp": {"host": "127.0.0.1", "port": srv.port, "security": "none"},
                },
            )
            assert r.status_code == 200, r.text
    finally:
        await rt.aclose()

    r = await run(env, "identity", "verify", "ada@acme.example")
    assert r.returncode == 0 and "verified 1 identity" in r.stderr
    attachment = tmp_path / "notes.txt"
    attachment.write_text("meeting notes")
    r = await run(
        env,
        "send",
        "--user",
        "ada@acme.example",
        "--from",
        "ada@acme.example",
        "--to",
        "carol@client.example",
        "--subject",
        "From the CLI",
        "--text",
        "-",
        "--attach",
        str(attachment),
        "--wait",
        "20",
        stdin="Hello from the command line\n",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["deliveries"][0]["recipient"] == "carol@client.example"
    assert result["deliveries"][0]["state"] == "sent"
    got = srv.received[0]
    assert got.rcpt_tos == ["carol@client.example"]
    assert b"Hello from the command line" in got.data and b"notes.txt" in got.data

    r = await run(
        env,
        "send",
        "--user",
        "ada@acme.example",
        "--from",
        "nobody@x.example",
        "--to",
        "a@b.example",
        "--text",
        "x",
    )
    assert r.returncode == 1 and "has no identity" in r.stderr


async def test_every_command_has_help(tmp_path):
    env = cli_env(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    commands = [
        [],
        ["serve"],
        ["web"],
        ["worker"],
        ["db", "upgrade"],
        ["user", "create"],
        ["token", "create"],
        ["identity", "verify"],
        ["send"],
        ["bounce", "classify"],
        ["config", "table"],
    ]
    for cmd in commands:
        r = await run(env, *cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Usage" in r.stdout
