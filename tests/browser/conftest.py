"""Browser tests: a real `postway serve` process (web, API and worker, SQLite) driven by Debian's
Chromium through Playwright, with a scripted SMTP server on loopback as the mail relay.

The relay is also the managed channel's only route (POSTWAY_TRANSPORT=*=relay), so the identity
confirmation mail lands there too and the test can open its link.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from peers.smtp import ScriptedSMTPServer, free_port

CHROMIUM = Path(os.environ.get("POSTWAY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
USER_EMAIL = "rep@example.com"
USER_PASSWORD = "correct horse battery"
REJECTED = "nobody@example.net"
REJECTION = "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"


@dataclass
class Server:
    url: str
    relay: ScriptedSMTPServer
    log: Path
    user_email: str = USER_EMAIL
    rejected: str = REJECTED  # the recipient the relay refuses with REJECTION
    env: dict[str, str] = field(default_factory=dict)

    def sender(self, email: str, *, admin: bool = False) -> str:
        """A new user (password USER_PASSWORD) with one verified identity at `email` on the
        managed channel, whose mail the transport routes to the relay; returns its API token."""
        run = [*_postway(), "user", "create", email, "--password-stdin"]
        self.cli([*run, "--admin"] if admin else run, stdin=USER_PASSWORD + "\n")
        token = self.cli([*_postway(), "token", "create", email]).strip().splitlines()[-1]
        answer = httpx.post(
            f"{self.url}/api/v1/identities",
            json={"name": email.split("@")[0].title(), "email": email},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        self.cli([*_postway(), "identity", "verify", email])
        return token

    def cli(self, args: list[str], stdin: str | None = None) -> str:
        done = subprocess.run(
            args, input=stdin, env=self.env, check=True, capture_output=True, text=True, timeout=60
        )
        return done.stdout

    def wait_for_mail(self, rcpt: str, timeout: float = 20.0) -> bytes:
        """The content of the first mail the relay accepted for `rcpt`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.relay.received:
                if rcpt.lower() in (r.lower() for r in rec.rcpt_tos):
                    return rec.data
            time.sleep(0.1)
        raise AssertionError(f"no mail for {rcpt} reached the relay; server log:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _postway() -> list[str]:
    exe = Path(sys.executable).with_name("postway")
    return (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from postway.cli import main; main()"]
    )


@pytest.fixture(scope="session")
def relay() -> Iterator[ScriptedSMTPServer]:
    """Plain SMTP relay (no TLS, no AUTH) that refuses one recipient with a 550."""
    srv = ScriptedSMTPServer(hostname="relay.test", rcpt_replies={REJECTED: REJECTION})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, relay: ScriptedSMTPServer) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("postway-browser")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data / "data"),
        POSTWAY_SECRET_KEY="browser-test-secret-key-0123456789abcdef",
        POSTWAY_ALLOW_PRIVATE_RELAYS="1",
        POSTWAY_TRANSPORT=f"*=127.0.0.1:{relay.port}",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
        POSTWAY_SMTP_CONNECT_TIMEOUT="5",
        POSTWAY_SMTP_COMMAND_TIMEOUT="10",
        # deferred mail is tried again within seconds (the live-status scenario waits for it)
        POSTWAY_RETRY_BASE_SECONDS="1",
        POSTWAY_RETRY_MAX_SECONDS="2",
    )
    subprocess.run(
        [*_postway(), "user", "create", USER_EMAIL, "--password-stdin"],
        input=USER_PASSWORD + "\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = data / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_postway(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    srv = Server(url, relay, log, env=env)
    try:
        _wait_until_up(proc, url, srv)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, srv: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`postway serve` exited with {proc.returncode}:\n{srv.tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"`postway serve` did not answer on {url} within 30 s:\n{srv.tail()}")


# Module scope, not session: while Playwright's sync API is running, its event loop counts as
# running in this thread, and the asyncio tests collected after these ones could not start theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install chromium) or set POSTWAY_TEST_CHROMIUM to its path. "
            "Playwright's own browser download is not used."
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the running server."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def save_screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot under test-output/screenshots/ (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Page, email: str = USER_EMAIL, password: str = USER_PASSWORD) -> None:
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")


@pytest.fixture
def shot() -> Callable[[Page, str], Path]:
    return save_screenshot


@pytest.fixture
def login() -> Callable[..., None]:
    return log_in


@dataclass
class Demo:
    url: str
    email: str
    password: str


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`postway serve --demo`: a seeded administrator, the local inbox, bounce.test bouncing
    and defer.test deferring; every page has something to show."""
    from postway.demo import DEMO_EMAIL, DEMO_PASSWORD

    data = tmp_path_factory.mktemp("postway-demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data / "data"),
        POSTWAY_SECRET_KEY="browser-demo-secret-key-0123456789abcdef",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )
    log = data / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_postway(), "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, Server(url, None, log))  # type: ignore[arg-type]
        yield Demo(url, DEMO_EMAIL, DEMO_PASSWORD)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
