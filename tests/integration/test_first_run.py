"""First run in the browser: `postway serve` on an empty data folder prints a one-time setup
link; the page behind it creates the first administrator, then the link is dead."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
from served import served_postway
from web_login import form_token, web_login

from peers.smtp import free_port
from postway import setup_token
from postway.store.models import utcnow

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/setup/[A-Za-z0-9_-]+)")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data_dir),
        POSTWAY_SECRET_KEY="first-run-test-secret-0123456789abcdef",
        POSTWAY_LOG_LEVEL="WARNING",
    )
    return env


def start_serve(data_dir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "serve", "--port", str(port)],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def _read_link(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = []
    for _ in range(100):
        line = await asyncio.to_thread(proc.stdout.readline)
        seen.append(line)
        m = LINK.search(line)
        if m:
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no setup link in the output:\n{''.join(seen)}")


async def _up(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("postway serve did not answer")


async def test_the_setup_link_creates_the_first_admin_once(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    proc = start_serve(data_dir, port)
    try:
        link = await _read_link(proc)
        base = f"http://127.0.0.1:{port}"
        path = link.removeprefix(base)
        await _up(base)
        # only a hash of the token is kept, in a file only Postway's user can read
        kept = data_dir / setup_token.FILE_NAME
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert path.rsplit("/", 1)[1] not in kept.read_text()

        async with httpx.AsyncClient(base_url=base) as browser:
            page = await browser.get(path)
            assert page.status_code == 200 and "Set up Postway" in page.text
            good = {
                "org_name": "Acme",
                "email": "Founder@Acme.example",
                "password": "a long first password",
                "password2": "a long first password",
            }
            # a form without its token, or with mistakes, leaves the link usable
            r = await browser.post(path, data={**good, "csrf": "forged"})
            assert r.status_code == 403
            token = form_token(page)
            r = await browser.post(path, data={**good, "password2": "another", "csrf": token})
            assert r.status_code == 400 and "differ" in r.text
            r = await browser.post(path, data={**good, "csrf": token})
            assert r.status_code == 303 and r.headers["location"] == "/login"
            assert not kept.exists()

            r = await web_login(browser, "founder@acme.example", "a long first password")
            assert r.status_code == 303
            admin = await browser.get("/admin/users")
            assert admin.status_code == 200 and "founder@acme.example" in admin.text

        async with httpx.AsyncClient(base_url=base) as other:
            page = await other.get(path)
            assert page.status_code == 404 and "no longer works" in page.text
            r = await other.post(path, data={**good, "email": "second@acme.example"})
            assert r.status_code == 404
            r = await web_login(other, "second@acme.example", "a long first password")
            assert r.status_code == 401
            # a made-up token is dead too
            assert (await other.get("/setup/" + "x" * 43)).status_code == 404
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_server_with_a_user_prints_no_setup_link(tmp_path):
    with served_postway(tmp_path) as served:
        log = tmp_path / "served.log"
        deadline = time.monotonic() + 20
        while "Log in with" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert "Log in with your email and password." in text
        assert "/setup/" not in text
        assert not (served.data_dir / setup_token.FILE_NAME).exists()


def test_setup_token_expires_after_an_hour_and_links_use_the_base_url(tmp_path):
    token = setup_token.issue(tmp_path)
    assert setup_token.is_valid(tmp_path, token)
    assert not setup_token.is_valid(tmp_path, token + "x")
    assert not setup_token.is_valid(tmp_path, token, utcnow() + timedelta(minutes=61))
    assert setup_token.link(token, "https://mail.acme.example/", "0.0.0.0", 8025) == (
        f"https://mail.acme.example/setup/{token}"
    )
    assert setup_token.link(token, "", "0.0.0.0", 8025) == f"http://127.0.0.1:8025/setup/{token}"
    assert setup_token.link(token, "", "::1", 80) == f"http://[::1]:80/setup/{token}"
    assert setup_token.consume(tmp_path, token) and not setup_token.consume(tmp_path, token)
