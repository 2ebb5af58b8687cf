"""API tokens: listed without their secret, revoked by their owner (API) or an admin (CLI),
optional expiry, and `serve --demo` keeping its token across restarts."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
from test_cli import cli_env, run
from test_demo import demo_token, start_demo

from peers.smtp import free_port
from postway.store.users import create_token, get_user_by_email

FIELDS = {"id", "name", "created_at", "last_used_at", "expires_at", "expired"}


def _rows(table: str) -> dict[str, list[str]]:
    """`postway token list` rows by token name: [id, name, created..., state]."""
    rows = [line.split() for line in table.splitlines()]
    return {r[1]: r for r in rows if r and re.fullmatch(r"[0-9a-f]{32}", r[0])}


def _api(env, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=env.app_client._transport,
        base_url="http://postway.test",
        headers={"Authorization": f"Bearer {token}"},
    )


async def _token(env, email: str, name: str, expires_in: timedelta | None = None) -> str:
    async with env.rt.db.session() as s, s.begin():
        user = await get_user_by_email(s, email)
        return await create_token(s, user, name, expires_in=expires_in)


async def test_owner_lists_and_revokes_tokens_over_the_api(env):
    ada = await env.account("ada@acme.example")
    bob = await env.account("bob@acme.example")
    spare = await _token(env, ada.email, "laptop", timedelta(days=30))
    assert (await ada.client.get("/api/v1/identities")).status_code == 200  # marks last use

    r = await ada.client.get("/api/v1/tokens")
    assert r.status_code == 200
    listed = {t["name"]: t for t in r.json()}
    assert set(listed) == {"", "laptop"} and all(set(t) == FIELDS for t in r.json())
    assert listed[""]["last_used_at"] is not None and listed[""]["expires_at"] is None
    assert listed["laptop"]["expires_at"] is not None and listed["laptop"]["expired"] is False
    assert ada.token not in r.text and spare not in r.text  # never the secret
    laptop = listed["laptop"]["id"]

    # another user can neither see nor revoke it
    assert [t["id"] for t in (await bob.client.get("/api/v1/tokens")).json()] != [laptop]
    assert laptop not in (await bob.client.get("/api/v1/tokens")).text
    assert (await bob.client.delete(f"/api/v1/tokens/{laptop}")).status_code == 404
    async with _api(env, spare) as api:
        assert (await api.get("/api/v1/identities")).status_code == 200

    assert (await ada.client.delete(f"/api/v1/tokens/{laptop}")).status_code == 204
    async with _api(env, spare) as api:
        r = await api.get("/api/v1/identities")
        assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert (await ada.client.delete(f"/api/v1/tokens/{laptop}")).status_code == 404
    assert [t["name"] for t in (await ada.client.get("/api/v1/tokens")).json()] == [""]


async def test_expired_token_is_refused(env):
    await env.account("ada@acme.example")
    old = await _token(env, "ada@acme.example", "old", timedelta(seconds=-1))
    async with _api(env, old) as api:
        r = await api.get("/api/v1/tokens")
        assert r.status_code == 401 and "expired" in r.json()["error"]


async def test_cli_creates_with_expiry_lists_and_revokes(env):
    await env.account("ada@acme.example")
    cenv = cli_env(
        env.rt.settings.data_dir.parent,
        env.rt.settings.database_url,
        POSTWAY_SECRET_KEY=env.rt.settings.secret_key,
    )
    create = ("token", "create", "ada@acme.example")
    r = await run(cenv, *create, "--name", "ci", "--expires-days", "7")
    assert r.returncode == 0, r.stderr
    ci = r.stdout.strip().splitlines()[-1]
    r = await run(cenv, *create, "--name", "gone", "--expires-days", "0")
    gone = r.stdout.strip().splitlines()[-1]
    async with _api(env, ci) as api:
        assert (await api.get("/api/v1/identities")).status_code == 200
    async with _api(env, gone) as api:
        assert (await api.get("/api/v1/identities")).status_code == 401

    r = await run(cenv, "token", "list", "ada@acme.example")
    assert r.returncode == 0, r.stderr
    assert ci not in r.stdout and gone not in r.stdout and "3 tokens" in r.stderr
    rows = _rows(r.stdout)
    assert rows["ci"][-1] == "active" and rows["gone"][-1] == "expired"
    ci_id = rows["ci"][0]

    r = await run(cenv, "token", "revoke", ci_id)
    assert r.returncode == 0 and f"revoked token {ci_id}" in r.stderr
    async with _api(env, ci) as api:
        assert (await api.get("/api/v1/identities")).status_code == 401
    r = await run(cenv, "token", "revoke", ci_id)
    assert r.returncode == 1 and "no token" in r.stderr
    assert "ci" not in _rows((await run(cenv, "token", "list", "ada@acme.example")).stdout)


async def _demo_output(env: dict[str, str], port: int) -> tuple[str | None, str]:
    """Start the demo, read what it printed up to its ready line, stop it."""
    proc = start_demo(env, port)
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for _ in range(200):
            line = await asyncio.to_thread(proc.stdout.readline)
            seen.append(line)
            if line.startswith("Postway is running"):
                break
        text = "".join(seen)
        token = None
        if "Demo API token:\n" in text:
            token = text.split("Demo API token:\n", 1)[1].splitlines()[0].strip()
        return token, text
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


async def test_demo_keeps_its_token_across_restarts(tmp_path):
    env = cli_env(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}", POSTWAY_LOG_LEVEL="WARNING")
    first, _ = await _demo_output(env, free_port())
    assert first and first.startswith("pw_")
    second, text = await _demo_output(env, free_port())
    assert second is None and first not in text and "kept from the first start" in text
    r = await run(env, "token", "list", "demo@postway.test")
    assert r.returncode == 0 and "1 token " in r.stderr

    # the kept token still works against a restarted demo
    port = free_port()
    proc = start_demo(env, port)
    try:
        assert proc.stdout is not None
        for _ in range(200):
            if (await asyncio.to_thread(proc.stdout.readline)).startswith("Postway is running"):
                break
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {first}"}
        ) as api:
            assert (await api.get("/api/v1/identities")).status_code == 200
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)

    # once revoked, the next start makes (and prints) a new one
    token_id = _rows((await run(env, "token", "list", "demo@postway.test")).stdout)["demo"][0]
    assert (await run(env, "token", "revoke", token_id)).returncode == 0
    proc = start_demo(env, free_port())
    try:
        fresh = await demo_token(proc)
        assert fresh.startswith("pw_") and fresh != first
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
