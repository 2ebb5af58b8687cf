"""Every page, logged in and out, checked by axe-core in Chromium (no serious or critical
violation) and at a phone's width (390 x 844: no horizontal scroll), against
`postway serve --demo` (an administrator, the local inbox, a bounce and a deferral to show).
Each page's screenshot is kept under test-output/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect

from postway.web.admin_pages import ADMIN_PAGE_PATHS

pytestmark = pytest.mark.browser

Demo = Any  # tests/browser/conftest.py: Demo
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
BLOCKING = ("serious", "critical")

# name -> path; {message}, {conversation} and {inbox_item} are filled in once mail exists
LOGGED_IN = {
    "conversations": "/conversations",
    "failed-deliveries": "/conversations?tab=failed",
    "message": "{message}",
    "conversation": "{conversation}",
    "compose": "/compose",
    "identities": "/identities",
    "channel": "/settings/channel",
    "inbox": "/inbox",
    "inbox-item": "{inbox_item}",
    "error": "/messages/0123456789abcdef0123456789abcdef",
    **{"admin-" + p.rsplit("/", 1)[-1]: p for p in ADMIN_PAGE_PATHS},
}
LOGGED_OUT = {"login": "/login", "error-logged-out": "/verify/no-such-token"}
# the pages whose screen-sized picture is also kept for docs/screenshots/ (chosen by hand)
FOR_DOCS = {
    "conversations", "failed-deliveries", "message", "channel", "compose", "admin-users",
    "phone-conversations", "phone-message",
}  # fmt: skip
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots" / "docs"


def docs_shot(page: Page, name: str) -> None:
    """The visible screen only (1280x800 or 390x844), for the README's pictures."""
    if name in FOR_DOCS:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SHOTS / f"{name}.png"))


@pytest.fixture(scope="module")
def site(browser: Browser, demo_server: Demo) -> dict[str, Any]:
    """Log in once and send one message to a delivered, a bounced and a deferred recipient;
    returns the session's storage state and the addresses of the pages that show it."""
    context = browser.new_context(base_url=demo_server.url, viewport=DESKTOP)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/login")
    page.fill("#email", demo_server.email)
    page.fill("#password", demo_server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/conversations$"))
    page.goto("/compose")
    page.fill("#to", "anna@client.example, nobody@bounce.test, slow@defer.test")
    page.fill("#subject", "Proposal for the spring campaign")
    page.fill("#text", "Hello,\n\nthe proposal is attached as discussed.")
    page.get_by_role("button", name="Send").click()
    expect(page).to_have_url(re.compile(r"/messages/\w+$"))
    bounced = page.locator("section.delivery[data-recipient='nobody@bounce.test'] .badge")
    expect(bounced.first).to_have_text("Bounced", timeout=30_000)
    retrying = page.locator("section.delivery[data-recipient='slow@defer.test'] .badge")
    expect(retrying.first).to_have_text("Retrying", timeout=30_000)
    paths = {"message": page.url.removeprefix(demo_server.url)}
    page.goto("/inbox")
    paths["inbox_item"] = page.locator("a[href^='/inbox/']").first.get_attribute("href") or ""
    paths["conversation"] = "/conversations/anna%40client.example"
    state = context.storage_state()
    context.close()
    return {"state": state, "paths": paths}


def _path(site: dict[str, Any], template: str) -> str:
    return template.format(**site["paths"])


@pytest.fixture
def desktop(browser: Browser, demo_server: Demo, site: dict[str, Any]) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=demo_server.url, viewport=DESKTOP, storage_state=site["state"]
    )
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture
def phone(browser: Browser, demo_server: Demo, site: dict[str, Any]) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=demo_server.url,
        viewport=PHONE,
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
        storage_state=site["state"],
    )
    context.set_default_timeout(20_000)
    yield context
    context.close()


def blocking_violations(page: Page) -> list[str]:
    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in found
        if v.get("impact") in BLOCKING
    ]


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the screen (0: no horizontal scroll)."""
    return int(
        page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


def visit(page: Page, path: str) -> None:
    answer = page.goto(path)
    assert answer is not None and answer.status in (200, 404), (path, answer and answer.status)
    assert "/login" not in page.url or path == "/login", f"{path} asked to log in again"


@pytest.mark.parametrize("name", list(LOGGED_IN))
def test_axe_logged_in(name: str, desktop: BrowserContext, site: dict[str, Any], shot) -> None:  # noqa: ANN001
    page = desktop.new_page()
    visit(page, _path(site, LOGGED_IN[name]))
    shot(page, name)
    docs_shot(page, name)
    assert blocking_violations(page) == []


@pytest.mark.parametrize("name", list(LOGGED_OUT))
def test_axe_logged_out(name: str, browser: Browser, demo_server: Demo, shot) -> None:  # noqa: ANN001
    context = browser.new_context(base_url=demo_server.url, viewport=DESKTOP)
    page = context.new_page()
    visit(page, LOGGED_OUT[name])
    shot(page, name)
    assert blocking_violations(page) == []
    if name == "login":  # and the form with its error shown
        page.fill("#email", demo_server.email)
        page.fill("#password", "not the password")
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_be_visible()
        assert blocking_violations(page) == []
    context.close()


@pytest.mark.parametrize("name", [*LOGGED_IN, *LOGGED_OUT])
def test_no_horizontal_scroll_at_phone_width(
    name: str, phone: BrowserContext, site: dict[str, Any], shot  # noqa: ANN001
) -> None:
    page = phone.new_page()
    if name in LOGGED_OUT:
        page.context.clear_cookies()
        visit(page, LOGGED_OUT[name])
    else:
        visit(page, _path(site, LOGGED_IN[name]))
    shot(page, f"phone-{name}")
    docs_shot(page, f"phone-{name}")
    assert horizontal_overflow(page) <= 0


def test_the_menu_folds_behind_a_button_on_a_phone(phone: BrowserContext, shot) -> None:  # noqa: ANN001
    page = phone.new_page()
    visit(page, "/conversations")
    nav = page.get_by_role("navigation", name="Main")
    menu = page.get_by_role("button", name="Menu")
    expect(nav).to_be_hidden()
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav.get_by_role("link", name="Compose")).to_be_visible()
    shot(page, "phone-menu-open")
    nav.get_by_role("link", name="Compose").click()
    expect(page).to_have_url(re.compile(r"/compose$"))


def test_keyboard_reaches_the_content_first_with_a_visible_focus(desktop: BrowserContext) -> None:
    page = desktop.new_page()
    visit(page, "/conversations")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the content")
    expect(skip).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))

