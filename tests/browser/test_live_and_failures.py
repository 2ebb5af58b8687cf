"""Live status and the Failed Deliveries actions in real Chromium against `postway serve`.

Each test has its own user and recipients; the relay (see conftest.py) is told per recipient
how to answer, and changes its answer while the page is open."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]
Server = Any  # tests/browser/conftest.py: Server
Login = Callable[..., None]
ACCEPT = "250 2.1.5 OK"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.org"


def compose(page: Page, to: str, subject: str) -> None:
    page.goto("/compose")
    page.fill("#to", to)
    page.fill("#subject", subject)
    page.fill("#text", "Hello,\n\nfollowing up on our call.")
    page.get_by_role("button", name="Send").click()
    expect(page).to_have_url(re.compile(r"/messages/\w+$"))


def test_a_message_goes_from_retrying_to_delivered_without_a_reload(
    page: Page, server: Server, login: Login, shot: Shot
) -> None:
    sender = unique("live-rep")
    server.sender(sender)
    to = unique("slow")
    server.relay.set_rcpt_reply(to, "451 4.3.0 Mailbox busy, try again later")
    login(page, sender)
    compose(page, to, "Live status")
    # a mark on this window: a reload or a navigation would lose it
    page.evaluate("window.postwayNoReload = true")

    row = page.locator(f"section.delivery[data-recipient='{to}']")
    expect(row.locator(".badge").first).to_have_text("Retrying", timeout=30_000)
    expect(row).to_contain_text("Mailbox busy")
    expect(page.locator("#message-live")).to_have_attribute("data-live-url", re.compile("/live/"))
    shot(page, "message-retrying")

    server.relay.set_rcpt_reply(to, ACCEPT)
    expect(row.locator(".badge").first).to_have_text("Delivered", timeout=30_000)
    assert page.evaluate("window.postwayNoReload") is True
    # every delivery is final: the part no longer names an address to poll
    expect(page.locator("#message-live")).not_to_have_attribute("data-live-url", re.compile("."))
    status = page.locator("#message-live .live-status")
    expect(status).to_have_text("Every recipient has an answer.")
    shot(page, "message-delivered")

    # Conversations follows too, without a reload
    to2 = unique("later")
    server.relay.set_rcpt_reply(to2, "451 4.3.0 Mailbox busy, try again later")
    compose(page, to2, "Live conversations")
    page.goto("/conversations")
    page.evaluate("window.postwayNoReload = true")
    conv = page.locator(f"#conversations-live tr[data-recipient='{to2}']")
    expect(conv.locator(".badge").first).to_have_text("Retrying", timeout=30_000)
    server.relay.set_rcpt_reply(to2, ACCEPT)
    expect(conv.locator(".badge").first).to_have_text("Delivered", timeout=30_000)
    assert page.evaluate("window.postwayNoReload") is True


def _failure_row(page: Page, address: str) -> Any:
    page.goto("/conversations?tab=failed")
    return page.locator(f"tr.failure[data-recipient='{address}']")


def test_resend_from_failed_deliveries(
    page: Page, server: Server, login: Login, shot: Shot
) -> None:
    sender = unique("resend-rep")
    server.sender(sender)
    to = unique("full")
    server.relay.set_rcpt_reply(to, "552 5.2.2 Mailbox full, quota exceeded")
    login(page, sender)
    compose(page, to, "Quarterly numbers")
    message_url = page.url
    expect(page.locator(".delivery .badge").first).to_have_text("Bounced", timeout=30_000)

    # the badge counts the failure as new until the tab is opened
    page.goto("/conversations")
    expect(page.locator("#failed-tab .new-count")).to_have_text("1 new")
    row = _failure_row(page, to)
    expect(row).to_contain_text("Mailbox full, quota exceeded")
    expect(row.get_by_role("button", name="Copy address")).to_be_visible()
    shot(page, "failed-deliveries-resend")
    page.goto("/conversations")
    expect(page.locator("#failed-tab .new-count")).to_have_count(0)

    server.relay.set_rcpt_reply(to, ACCEPT)
    row = _failure_row(page, to)
    row.get_by_role("button", name=re.compile("^Resend")).click()
    expect(page.get_by_role("status").first).to_contain_text(f"Sending to {to} again")
    page.goto(message_url)
    expect(page.locator(".delivery .badge").first).to_have_text("Delivered", timeout=30_000)
    expect(_failure_row(page, to)).to_have_count(0)


def test_lift_a_suppression_and_resend(
    page: Page, server: Server, login: Login, shot: Shot
) -> None:
    sender = unique("lift-admin")
    server.sender(sender, admin=True)
    to = unique("gone")
    server.relay.set_rcpt_reply(to, "550 5.1.1 <x>: Recipient address rejected: User unknown")
    login(page, sender)
    compose(page, to, "Checking in")
    message_url = page.url
    expect(page.locator(".delivery .badge").first).to_have_text("Bounced", timeout=30_000)

    # a hard bounce suppresses the address: resending would only be skipped, so it is refused
    row = _failure_row(page, to)
    expect(row.locator(".why-not")).to_contain_text("suppressed")
    expect(row.get_by_role("button", name=re.compile("^Resend"))).to_have_count(0)
    shot(page, "failed-deliveries-suppressed")

    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Lift suppression")).click()
    expect(page.get_by_role("status").first).to_contain_text("no longer suppressed")

    server.relay.set_rcpt_reply(to, ACCEPT)
    row = _failure_row(page, to)
    row.get_by_role("button", name=re.compile("^Resend")).click()
    expect(page.get_by_role("status").first).to_contain_text(f"Sending to {to} again")
    page.goto(message_url)
    expect(page.locator(".delivery .badge").first).to_have_text("Delivered", timeout=30_000)

