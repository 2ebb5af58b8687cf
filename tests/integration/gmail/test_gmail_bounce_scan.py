"""Bounces for Gmail senders: the connected mailbox is scanned for delivery reports (list +
get raw only), each matched to that user's Gmail deliveries by Message-ID and recipient."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from gmail_support import account_row, connect, deliveries, gmail_sender, send
from sqlalchemy import func, select

from peers.google import ACCOUNT
from postway.bounces.gmail_scan import QUERY_SIGNS, GmailBounceScanner
from postway.channels.google_api import SCOPE_READONLY
from postway.store.models import DeliveryEvent

OTHER = "other@gmail.test"
# What a scan may ask Gmail: list messages, or get one (never modify, trash, delete, ...).
READ_ONLY = re.compile(r"^/gmail/v1/users/me/messages(/[A-Za-z0-9_-]+)?$")


@pytest.fixture
async def scanner(genv, google) -> AsyncIterator[GmailBounceScanner]:
    google.state.bounce_domains.add("bounce.test")  # such mail comes back as Gmail's DSN
    rt = genv.rt
    scan = GmailBounceScanner(rt.db, rt.settings, rt.accounts, rt.new_google_api)
    yield scan
    await scan.aclose()


async def _scanning_sender(genv, email: str, identity: str):
    """A user who connected with bounce scanning and chose Gmail; returns (account, identity)."""
    acct = await genv.account(email)
    r = await connect(acct, genv, bounce_scanning="true")
    assert r.status_code == 303, r.text
    assert (await acct.client.put("/api/v1/delivery-channel", json={"channel": "gmail"})).is_success
    r = await acct.client.post("/api/v1/identities", json={"name": "Rep", "email": identity})
    assert r.status_code == 201, r.text
    return acct, r.json()["id"]


async def _event_count(genv) -> int:
    async with genv.rt.db.reader() as s:
        return int(await s.scalar(select(func.count()).select_from(DeliveryEvent)) or 0)


async def test_a_bounce_in_the_mailbox_marks_only_the_owners_delivery_bounced(
    genv, google, scanner
):
    google.state.add_account(OTHER, display_name="Other")
    ada, ada_identity = await _scanning_sender(genv, "ada@acme.example", ACCOUNT)
    # the readonly scope is asked for only with bounce scanning, and was granted
    [auth] = google.state.requests_to("/o/oauth2/v2/auth")
    assert SCOPE_READONLY in auth.query["scope"].split()
    row = await account_row(genv)
    assert row is not None and row.bounce_scanning and SCOPE_READONLY in row.scopes

    # nothing sent yet: the mailbox is not even listed
    [nothing] = await scanner.scan_once()
    assert nothing.skipped and google.state.requests_to("/messages") == []

    # another user, with their own Gmail account (no scanning), gets a real bounce too
    google.state.signed_in = OTHER
    bob, bob_identity = await gmail_sender(genv, "bob@other.example", OTHER)
    bob_mid = await send(bob, bob_identity, to=["ghost@bounce.test"], subject="Bob's")
    ada_mid = await send(
        ada, ada_identity, to=["lead@client.example", "nobody@bounce.test"], subject="Hello"
    )
    await genv.drain()
    assert {d.recipient: d.state for d in await deliveries(genv, ada_mid)} == {
        "lead@client.example": "sent",
        "nobody@bounce.test": "sent",
    }
    # Bob's bounce, quoting Bob's Message-ID and recipient, also shows up in Ada's mailbox
    bob_bounce = next(
        m.raw for m in google.state.accounts[OTHER].mailbox if "INBOX" in m.labels
    )
    google.state.add_message(ACCOUNT, bob_bounce)
    before = len(google.state.requests)

    [scan] = await scanner.scan_once()
    assert scan.error is None and scan.skipped is None
    assert (scan.listed, scan.fetched) == (2, 2)
    assert sorted(r.status for r in scan.results) == ["processed", "unmatched"]

    ada_states = {d.recipient: d for d in await deliveries(genv, ada_mid)}
    bounced = ada_states["nobody@bounce.test"]
    assert (bounced.state, bounced.reason, bounced.hard) == ("bounced", "userunknown", True)
    assert ada_states["lead@client.example"].state == "sent"
    [bob_delivery] = await deliveries(genv, bob_mid)
    assert bob_delivery.state == "sent"  # never touched by a report in Ada's mailbox

    failed = (await ada.client.get("/api/v1/failed-deliveries")).json()["items"]
    assert [(f["recipient"], f["state"], f["reason"]) for f in failed] == [
        ("nobody@bounce.test", "bounced", "userunknown")
    ]
    assert (await bob.client.get("/api/v1/failed-deliveries")).json()["items"] == []

    # only list and get, with a query real Gmail understands too; nothing marked or moved
    seen = google.state.requests[before:]
    assert {(r.method, bool(READ_ONLY.match(r.path))) for r in seen} == {("GET", True)}
    [listing] = [r for r in seen if r.path.endswith("/messages")]
    assert re.fullmatch(re.escape(QUERY_SIGNS) + r" after:\d+", listing.query["q"])
    assert all(m.labels == {"INBOX", "UNREAD"} for m in _inbox(google, ACCOUNT))

    # a second pass lists again but fetches and changes nothing
    events = await _event_count(genv)
    gets = len(_gets(google))
    [again] = await scanner.scan_once()
    assert (again.listed, again.fetched, again.results) == (2, 0, [])
    assert len(_gets(google)) == gets and await _event_count(genv) == events


async def test_a_refused_grant_during_a_scan_asks_the_user_to_reconnect(genv, google, scanner):
    ada, identity = await _scanning_sender(genv, "ada@acme.example", ACCOUNT)
    await send(ada, identity, to=["nobody@bounce.test"])
    await genv.drain()
    google.state.revoke_grants(ACCOUNT)  # the user removed Postway's access at Google

    [scan] = await scanner.scan_once()
    assert scan.error and "401" in scan.error
    row = await account_row(genv)
    assert row is not None and row.status == "needs_reconnect"
    assert "connect the account again" in (row.reason or "")
    # an account that needs reconnecting is not scanned again until it is reconnected
    before = len(google.state.requests)
    assert await scanner.scan_once() == []
    assert len(google.state.requests) == before


async def test_without_the_readonly_scope_scanning_stops_and_sending_goes_on(
    genv, google, scanner
):
    google.state.withheld_scopes = {SCOPE_READONLY}  # the user unticked reading at consent
    ada, identity = await _scanning_sender(genv, "ada@acme.example", ACCOUNT)
    mid = await send(ada, identity, to=["nobody@bounce.test"])
    await genv.drain()

    [scan] = await scanner.scan_once()
    assert scan.skipped and "gmail.readonly" in scan.skipped
    assert google.state.requests_to("/messages") == []
    row = await account_row(genv)
    assert row is not None and row.status == "connected"
    [d] = await deliveries(genv, mid)
    assert d.state == "sent"


def _inbox(google, address: str):
    return [m for m in google.state.accounts[address].mailbox if "INBOX" in m.labels]


def _gets(google):
    return [r for r in google.state.requests if "/messages/" in r.path and r.method == "GET"]
