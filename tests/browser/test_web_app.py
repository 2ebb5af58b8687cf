"""The web app in real Chromium against a real `postway serve` (see conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from postway.web.page_kit import reason_words, sentence

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]
Server = Any  # tests/browser/conftest.py: Server
Login = Callable[..., None]
ACCEPTED = "buyer@example.net"
RELAY_PASSWORD = "relay-secret-do-not-echo"


def nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def test_a_page_without_login_redirects_to_login(page: Page, shot: Shot) -> None:
    page.goto("/settings/channel")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shot(page, "login")


def test_a_wrong_password_shows_an_error(
    page: Page, login: Login, shot: Shot, server: Server
) -> None:
    login(page, server.user_email, "not the password")
    expect(page.get_by_role("alert")).to_have_text("wrong email or password")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#email")).to_have_value(server.user_email)  # kept, the password is not
    shot(page, "login-wrong-password")


def test_a_post_without_the_csrf_token_is_refused(page: Page, login: Login) -> None:
    login(page)
    expect(page).to_have_url(re.compile(r"/conversations$"))
    form = {"name": "Mallory", "email": "mallory@example.org"}
    for extra in ({}, {"csrf": "csrf_forged"}):
        answer = page.request.post("/identities", form={**form, **extra}, max_redirects=0)
        assert answer.status == 403, answer.text()
        assert "did not come from Postway" in answer.text()
    answer = page.request.post("/settings/channel", form={"channel": "managed"}, max_redirects=0)
    assert answer.status == 403
    page.goto("/identities")
    expect(page.get_by_text("mallory@example.org")).to_have_count(0)


def test_send_through_an_smtp_relay_and_find_the_failure(
    page: Page, login: Login, shot: Shot, server: Server
) -> None:
    rejected = server.rejected
    login(page)
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible()

    # -- an identity, verified through the link mailed to it
    nav(page, "Identities")
    page.fill("#name", "Rita Rep")
    page.fill("#email", "rita@example.com")
    page.fill("#signature", "Rita Rep\nAccount Executive")
    page.get_by_role("button", name="Add identity").click()
    expect(page.get_by_role("status")).to_contain_text("Added Rita Rep <rita@example.com>")
    row = page.locator("tr.identity", has_text="rita@example.com")
    expect(row).to_contain_text("Not verified")
    row.get_by_role("button", name="Send confirmation").click()
    expect(page.get_by_role("status")).to_contain_text("confirmation link is on its way")
    expect(row).to_contain_text("Waiting for confirmation")
    mail = server.wait_for_mail("rita@example.com").decode()
    link = re.search(r"http://\S+/verify/\S+", mail)
    assert link, mail
    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="Address confirmed")).to_be_visible()
    page.goto("/identities")
    expect(row).to_contain_text("Verified")
    shot(page, "identities")

    # -- the channel choice explains the three channels side by side
    nav(page, "Delivery channel")
    compare = page.locator("table.compare")
    expect(compare).to_contain_text('"via" tag')
    expect(compare).to_contain_text("Postway's mail servers (default)")
    expect(compare).to_contain_text("Your own SMTP server")
    expect(compare).to_contain_text("Not connected yet")
    expect(page.locator("input[name=channel][value=gmail]")).to_be_disabled()

    # save a relay with a login: the password is stored but never shown again
    page.check("input[name=channel][value=smtp]")
    page.fill("#host", "127.0.0.1")
    page.fill("#port", str(server.relay.port))
    page.select_option("#security", "none")
    page.fill("#username", "rita")
    page.fill("#password", RELAY_PASSWORD)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Your own SMTP server")
    expect(page.locator("#password-set")).to_have_text("password set")
    expect(page.locator("#password")).to_have_value("")
    assert RELAY_PASSWORD not in page.content()

    # the test names the failing step: this relay offers no login on a plain connection
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text('failed at the step "auth"')
    assert RELAY_PASSWORD not in page.content()

    # without a login it connects
    page.fill("#username", "")
    page.get_by_role("button", name="Test connection").click()
    expect(result).to_contain_text("Connection works")
    shot(page, "channel-test-ok")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    smtp_head = page.locator("table.compare th[data-col=smtp]")
    expect(smtp_head).to_contain_text("In use")

    # -- compose: a bad address is explained, then one recipient refused and one accepted
    nav(page, "Compose")
    expect(page.locator("#identity_id")).to_contain_text("rita@example.com")
    page.fill("#to", f"{rejected}, not-an-address")
    page.fill("#subject", "Pricing for next quarter")
    page.fill("#text", "Hello,\n\nhere are the numbers we discussed.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("To, address 2")
    expect(page.locator("#subject")).to_have_value("Pricing for next quarter")
    shot(page, "compose-error")
    page.fill("#to", f"{rejected}, {ACCEPTED}")
    page.get_by_role("button", name="Send").click()
    expect(page).to_have_url(re.compile(r"/messages/\w+$"))
    expect(page.get_by_role("status").first).to_contain_text("Queued for 2 recipients")

    # the worker in `postway serve` delivers; the page refreshes itself meanwhile
    refused = page.locator(f"section.delivery[data-recipient='{rejected}']")
    accepted = page.locator(f"section.delivery[data-recipient='{ACCEPTED}']")
    expect(refused.locator(".badge").first).to_have_text("Failed", timeout=30_000)
    expect(accepted.locator(".badge").first).to_have_text("Sent", timeout=30_000)
    expect(refused).to_contain_text("User unknown")
    expect(refused).to_contain_text("userunknown")
    shot(page, "message")
    got = server.wait_for_mail(ACCEPTED)
    assert b"Pricing for next quarter" in got and b"Account Executive" in got

    # -- conversations and Failed Deliveries
    nav(page, "Conversations")
    conversations = page.get_by_role("region", name="Conversations")
    expect(conversations).to_contain_text(ACCEPTED)
    expect(conversations).to_contain_text(rejected)
    expect(page.locator(".tabs .count")).to_have_text("1")
    shot(page, "conversations")
    page.get_by_role("link", name=re.compile("Failed Deliveries")).click()
    expect(page).to_have_url(re.compile(r"tab=failed"))
    failure = page.locator("tr.failure")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text(rejected)
    expect(failure).to_contain_text("Pricing for next quarter")
    expect(failure).to_contain_text("userunknown")
    # the reason in plain words (the pages' own sentence for it), then the code and the server
    expect(failure.locator(".plain")).to_have_text(sentence(reason_words("userunknown")))
    expect(failure).to_contain_text("5.1.1")
    expect(failure).to_contain_text("Recipient address rejected: User unknown")
    shot(page, "failed-deliveries")
