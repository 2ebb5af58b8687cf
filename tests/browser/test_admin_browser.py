"""First run and the admin pages in real Chromium: `postway serve` on an empty data folder
prints a setup link; the administrator it creates uses the Users and Throttling pages. A
screenshot of each admin page is saved under test-output/screenshots/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from peers.smtp import ScriptedSMTPServer, free_port
from postway.web.admin_pages import ADMIN_PAGE_PATHS

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]
ADMIN = "founder@example.com"
ADMIN_PASSWORD = "a long first password"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/setup/[A-Za-z0-9_-]+)")


@dataclass
class FirstRun:
    url: str
    setup_link: str
    log: Path


def _start(data: Path, port: int, relay_port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data / "data"),
        POSTWAY_SECRET_KEY="admin-browser-secret-key-0123456789abcdef",
        POSTWAY_ALLOW_PRIVATE_RELAYS="1",
        POSTWAY_TRANSPORT=f"*=127.0.0.1:{relay_port}",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )
    with (data / "serve.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "postway", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="module")
def first_run(
    tmp_path_factory: pytest.TempPathFactory, relay: ScriptedSMTPServer
) -> Iterator[FirstRun]:
    """`postway serve` on an empty data folder (no user yet), and the setup link it printed."""
    data = tmp_path_factory.mktemp("postway-first-run")
    port = free_port()
    proc = _start(data, port, relay.port)
    log = data / "serve.log"
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        link = None
        while link is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`postway serve` exited:\n{log.read_text()}")
            m = LINK.search(log.read_text(errors="replace"))
            if m:
                link = m.group(1)
            time.sleep(0.1)
        if link is None:
            pytest.fail(f"no setup link printed:\n{log.read_text()}")
        while httpx.get(f"{url}/healthz", timeout=2).status_code != 200:
            time.sleep(0.1)
        yield FirstRun(url, link, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def tab(browser: Browser, first_run: FirstRun) -> Iterator[Page]:
    context = browser.new_context(base_url=first_run.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.on("dialog", lambda d: d.accept())  # the confirmations of forms marked data-confirm
    yield pg
    context.close()


def _log_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/conversations$"))


def test_the_setup_link_creates_the_first_admin_then_is_refused(
    tab: Page, first_run: FirstRun, shot: Shot
) -> None:
    tab.goto(first_run.setup_link)
    expect(tab.get_by_role("heading", name="Set up Postway")).to_be_visible()
    tab.get_by_label("Organisation name").fill("Example Ltd")
    tab.get_by_label("Your email address").fill(ADMIN)
    tab.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    tab.get_by_label("Password again").fill(ADMIN_PASSWORD)
    shot(tab, "setup-first-admin")
    tab.get_by_role("button", name="Create the administrator").click()
    expect(tab).to_have_url(re.compile(r"/login$"))
    expect(tab.get_by_role("status")).to_contain_text(f"{ADMIN} is your organisation")
    _log_in(tab, ADMIN, ADMIN_PASSWORD)
    tab.goto(first_run.setup_link)
    expect(tab.get_by_role("heading", name="This setup link no longer works")).to_be_visible()
    shot(tab, "setup-link-used")


def test_the_admin_uses_the_users_and_throttling_pages(tab: Page, shot: Shot) -> None:
    _log_in(tab, ADMIN, ADMIN_PASSWORD)
    tab.get_by_role("navigation", name="Main").get_by_role("link", name="Administration").click()
    expect(tab).to_have_url(re.compile(r"/admin/users$"))

    # add a member with a first password, make them an administrator, reset their password
    tab.get_by_label("Email address").fill("colleague@example.com")
    tab.get_by_label("First password").fill("colleague password")
    tab.get_by_role("button", name="Add user").click()
    expect(tab.get_by_role("status")).to_contain_text("Created colleague@example.com")
    row = tab.locator("tr.user[data-email='colleague@example.com']")
    expect(row).to_contain_text("Member")
    row.get_by_role("button", name=re.compile("^Make administrator")).click()
    expect(row).to_contain_text("Administrator")
    shot(tab, "admin-users")
    row.get_by_role("button", name=re.compile("^Reset password")).click()
    heading = tab.get_by_role("heading", name="New password for colleague@example.com")
    expect(heading).to_be_visible()
    new_password = tab.locator("#one-time-password").inner_text()
    assert len(new_password) >= 16
    shot(tab, "admin-new-password")

    # throttling: the relay gets batches of 25 with a 45 s wait; 2,000 a day for every channel
    sections = tab.get_by_role("navigation", name="Administration")
    sections.get_by_role("link", name="Throttling").click()
    tab.get_by_label("Batch size: Your own SMTP server").fill("25")
    tab.get_by_label("Wait after a batch, in seconds: Your own SMTP server").fill("45")
    tab.get_by_label("Daily cap: Every channel").fill("2000")
    tab.get_by_role("button", name="Save limits").click()
    expect(tab.get_by_role("status")).to_contain_text("Saved")
    tab.reload()
    expect(tab.get_by_label("Batch size: Your own SMTP server")).to_have_value("25")
    expect(tab.get_by_label("Daily cap: Every channel")).to_have_value("2000")
    expect(tab.get_by_label("Batch size: Every channel")).to_have_value("")
    shot(tab, "admin-throttle")

    # the colleague logs in with the new password
    tab.get_by_role("button", name="Log out").click()
    _log_in(tab, "colleague@example.com", new_password)


def test_a_screenshot_of_every_admin_page(tab: Page, shot: Shot) -> None:
    _log_in(tab, ADMIN, ADMIN_PASSWORD)
    for path in ADMIN_PAGE_PATHS:
        answer = tab.goto(path)
        assert answer is not None and answer.status == 200, path
        expect(tab.get_by_role("heading", name="Administration")).to_be_visible()
        shot(tab, "admin-" + path.rsplit("/", 1)[1])
