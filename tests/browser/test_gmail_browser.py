"""Connecting Gmail in real Chromium, through the stand-in for Google that `postway serve
--demo` serves itself: the channel page's "Connect Gmail", the consent page's "Allow", and
back on the channel page the connected account and the From recipients will see."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from peers.smtp import free_port
from postway.demo import DEMO_ALIAS, DEMO_EMAIL, DEMO_PASSWORD

pytestmark = pytest.mark.browser

GMAIL = "demo@gmail.test"
Shot = Callable[[Page, str], Path]
Login = Callable[..., None]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `postway serve --demo` (SQLite, its own local inbox and Google stand-in)."""
    data = tmp_path_factory.mktemp("postway-demo-browser")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data / "data"),
        POSTWAY_SECRET_KEY="browser-demo-secret-key-0123456789abcdef",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )
    log = data / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postway", "serve", "--demo"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`postway serve --demo` did not start:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def demo_page(browser: Browser, demo_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=demo_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def test_connect_gmail_through_the_demo_stand_in(
    demo_page: Page, login: Login, shot: Shot
) -> None:
    page = demo_page
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    page.on("console", on_console)
    login(page, DEMO_EMAIL, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/conversations$"))
    page.goto("/settings/channel")
    gmail = page.locator("#gmail")
    expect(gmail).to_contain_text("Connect one Gmail")

    gmail.get_by_role("link", name="Connect Gmail", exact=True).click()
    # the stand-in's consent page, served by this Postway at /demo-google
    expect(page).to_have_url(re.compile(r"/demo-google/o/oauth2/v2/auth\?"))
    expect(page.get_by_role("heading", name="Postway wants to access your Google Account"))\
        .to_be_visible()  # fmt: skip
    expect(page.get_by_label("Account")).to_have_value(GMAIL)
    shot(page, "gmail-demo-consent")
    page.get_by_role("button", name="Allow").click()

    expect(page).to_have_url(re.compile(r"/settings/channel(\?.*)?$"))
    expect(page.get_by_role("status")).to_contain_text(f"Connected {GMAIL}")
    expect(page.locator("#gmail-address")).to_have_text(GMAIL)
    expect(gmail).to_contain_text("Connected")
    expect(gmail.get_by_text("Verified send-as addresses")).to_contain_text(DEMO_ALIAS)
    # the From recipients will see: the demo identity is not an alias, so the account's
    row = page.locator("#gmail-from tr", has_text=DEMO_EMAIL)
    expect(row.locator("td").nth(1)).to_contain_text(GMAIL)
    expect(row).to_contain_text(f"not a send-as alias of {GMAIL}")
    assert shot(page, "gmail-demo-connected").stat().st_size > 0
    # nothing on the way (consent page included) broke the Content-Security-Policy
    assert not [e for e in errors if "Content Security Policy" in e], errors
