"""Every remote fault of `fault_matrix.CASES`, run through the real worker, observed as stored.

For each row a loopback peer injects the fault: a `ScriptedSMTPServer` found through MX
records of the DNS peer (managed channel), the same server as the user's custom relay, or the
Google stand-in answering Gmail's send or token endpoint with an error. One message goes
through Postway's API and the runtime's worker (one attempt, or two when the row says so);
the test then reads the delivery and asserts state, reason, last event and the next retry
(next attempt time minus attempt time) equal the row. One runtime (SQLite), DNS peer and
Google stand-in serve the whole module; each row has its own domain, relay or account.

The last test checks that docs/reliability.md shows exactly the rendering of the same rows.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
import trustme
from fault_matrix import CASES, COMMAND_TIMEOUT, JITTER, RETRY_BASE, Case, render, section_of
from gmail.gmail_support import gmail_sender
from integration_support import Account, Env, make_settings
from sqlalchemy import select, update

from peers.dns import DNSPeer
from peers.google import GooglePeer
from peers.smtp import ScriptedSMTPServer, free_port
from peers.tls import TLSPeer
from postway.channels.managed import ManagedChannel
from postway.channels.registry import ChannelRegistry
from postway.config import Settings
from postway.delivery.transitions import RetryNow, transition
from postway.google_standin import Fault
from postway.runtime import Runtime
from postway.store.identities import mark_verified
from postway.store.models import (
    ChannelSetting,
    ConnectedAccount,
    Delivery,
    DeliveryEvent,
    Suppression,
    utcnow,
)
from postway.web.app import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BIG_TEXT = ("y" * 998 + "\n") * 4000  # ~4 MB: a drop mid-DATA meets the client still writing


@dataclass
class Faults:
    """The module's shared world: one runtime, its HTTP client, the DNS and Google peers."""

    env: Env
    strict: Runtime  # the same database, with POSTWAY_MTA_REQUIRE_TLS=1
    dns: DNSPeer
    google: GooglePeer
    mx_port: int  # every MX host listens on this port, each on its own 127.0.0.x
    untrusted: ssl.SSLContext  # a server certificate from a CA nobody trusts
    managed: tuple[Account, str] | None = None
    serial: int = 0

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial


@pytest.fixture(scope="module")
def untrusted_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def module_dns() -> Iterator[DNSPeer]:
    with DNSPeer() as peer:
        yield peer


@pytest.fixture(scope="module")
def module_google() -> Iterator[GooglePeer]:
    with GooglePeer(auto_approve=True) as peer:
        yield peer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def faults(
    tmp_path_factory: pytest.TempPathFactory,
    tls_peer: TLSPeer,
    module_dns: DNSPeer,
    module_google: GooglePeer,
    untrusted_context: ssl.SSLContext,
) -> AsyncIterator[Faults]:
    tmp = tmp_path_factory.mktemp("faults")
    s = make_settings(
        tmp, f"sqlite:///{tmp / 'postway.db'}", tls_peer,
        dns_nameservers=module_dns.nameserver,
        smtp_connect_timeout=COMMAND_TIMEOUT, smtp_command_timeout=COMMAND_TIMEOUT,
        retry_base_seconds=RETRY_BASE, retry_max_seconds=4 * 3600.0,
        google_base_url=module_google.base_url, google_client_id=module_google.client_id,
        google_client_secret=module_google.client_secret,
    )  # fmt: skip
    mx_port = free_port()
    rt, strict = (
        _runtime(s, mx_port),
        _runtime(s.model_copy(update={"mta_require_tls": True}), mx_port),
    )
    await rt.start()
    await strict.start()
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://postway.test") as client:
        env = Env(rt, client)
        yield Faults(env, strict, module_dns, module_google, mx_port, untrusted_context)
    await strict.aclose()
    await rt.aclose()


def _runtime(s: Settings, mx_port: int) -> Runtime:
    """The composition root, its managed channel dialling MX hosts on the peers' port
    instead of 25 (as test_mx_ssrf.py does); everything else as built."""
    rt = Runtime(s)
    rt.registry = ChannelRegistry(
        s, rt.box,
        managed=lambda: ManagedChannel(
            s, mx_port=mx_port, tls_mode="require" if s.mta_require_tls else "opportunistic"
        ),
        accounts=rt.accounts, google=rt.new_google_api,
    )  # fmt: skip
    return rt


# -- the peers of one row ----------------------------------------------------------------------


def _server_kwargs(case: Case, tls_peer: TLSPeer, untrusted: ssl.SSLContext) -> dict[str, Any]:
    kw = {k: v for k, v in case.peer.items() if k not in ("tls", "security", "listen")}
    tls = case.peer.get("tls")
    if tls == "trusted":
        kw["tls_context"] = tls_peer.server_context()
    elif tls == "untrusted":
        kw["tls_context"] = untrusted
    return kw


async def _managed_sender(f: Faults) -> tuple[Account, str]:
    if f.managed is None:
        acct = await f.env.account("rep@managed.example")
        r = await acct.client.post(
            "/api/v1/identities", json={"name": "Rep", "email": "rep@managed.example"}
        )
        assert r.status_code == 201, r.text
        async with f.env.rt.db.session() as db, db.begin():
            await mark_verified(db, "rep@managed.example")
        f.managed = (acct, r.json()["id"])
    return f.managed


async def _relay_sender(f: Faults, n: int, port: int, security: str) -> tuple[Account, str]:
    email = f"rep{n}@relay.example"
    acct = await f.env.account(email)
    r = await acct.client.post("/api/v1/identities", json={"name": "Rep", "email": email})
    assert r.status_code == 201, r.text
    relay = {"host": "localhost", "port": port, "security": security}
    r2 = await acct.client.put("/api/v1/delivery-channel", json={"channel": "smtp", "smtp": relay})
    assert r2.status_code == 200, r2.text
    return acct, r.json()["id"]


async def _send(acct: Account, identity: str, to: str, big: bool) -> str:
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": identity, "to": [to], "subject": "Faults",
              "text": BIG_TEXT if big else "Hello"},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _smtp_row(f: Faults, case: Case, tls_peer: TLSPeer) -> str:
    """Start the row's server, send one message through the row's channel; the message id."""
    n = f.next_serial()
    kw = _server_kwargs(case, tls_peer, f.untrusted)
    listen = case.peer.get("listen", True)
    if case.channel == "managed":
        ip, domain = f"127.0.0.{10 + n}", f"f{n}.example"
        f.dns.mx(domain, (10, f"mx.{domain}"))
        f.dns.a(f"mx.{domain}", ip)
        srv = ScriptedSMTPServer(host=ip, port=f.mx_port, **kw)
        acct, identity = await _managed_sender(f)
        to = f"lead@{domain}"
    else:
        srv = ScriptedSMTPServer(**kw)
        if not listen:
            srv.port = free_port()
        to = "lead@client.example"
    if listen:
        await srv.__aenter__()
    try:
        if case.channel == "smtp":
            acct, identity = await _relay_sender(f, n, srv.port, case.peer.get("security", "none"))
        message_id = await _send(acct, identity, to, case.big)
        await _attempts(f, message_id, case.tries, f.strict if case.require_tls else f.env.rt)
    finally:
        if listen:
            await srv.__aexit__(None, None, None)
    return message_id


async def _gmail_row(f: Faults, case: Case) -> str:
    n = f.next_serial()
    address = f"rep{n}@gmail.test"
    f.google.state.add_account(address, display_name="Rep")
    f.google.state.signed_in = address
    acct, identity = await gmail_sender(f.env, f"user{n}@acme.example", address)
    endpoint = case.peer.get("endpoint", "send")
    if endpoint == "token":  # the access token is due for a refresh at the next send
        async with f.env.rt.db.session() as s, s.begin():
            await s.execute(
                update(ConnectedAccount)
                .where(ConnectedAccount.address == address)
                .values(token_expires_at=utcnow())
            )
    if case.peer.get("expire_tokens"):
        f.google.state.expire_access_tokens(address)
    if case.peer.get("revoke"):
        f.google.state.revoke_grants(address)
    if "fault" in case.peer:
        f.google.state.fail_next(
            endpoint,
            Fault(case.peer["fault"]),
            times=case.peer.get("times", 1),
            retry_after=case.peer.get("retry_after"),
        )
    message_id = await _send(acct, identity, "lead@client.example", case.big)
    await _attempts(f, message_id, case.tries, f.env.rt)
    return message_id


async def _attempts(f: Faults, message_id: str, tries: int, rt: Runtime) -> None:
    """Run `rt`'s worker for the message (the only one due); before each further try, an
    operator's "retry now"."""
    for attempt in range(tries):
        if attempt:
            async with rt.db.session() as s, s.begin():
                d = await s.scalar(select(Delivery).where(Delivery.message_id == message_id))
                assert d is not None
                transition(s, d, RetryNow(by="test"), now=utcnow())
        assert await rt.worker.run_once() == 1


# -- what was stored ---------------------------------------------------------------------------


@dataclass
class Observed:
    state: str
    reason: str | None
    event: str
    attempts: int
    delay: float | None  # next attempt time minus the attempt's time, seconds
    due_at: datetime | None
    expires_at: datetime
    attention: str | None
    tls: str | None
    diagnostic: str
    suppressed: bool
    account: str | None  # the status of the user's connected account, if any


async def _observe(f: Faults, message_id: str) -> Observed:
    async with f.env.rt.db.session() as s:
        d = await s.scalar(select(Delivery).where(Delivery.message_id == message_id))
        assert d is not None
        last = await s.scalar(
            select(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == d.id)
            .order_by(DeliveryEvent.id.desc())
            .limit(1)
        )
        assert last is not None
        attention = await s.scalar(
            select(ChannelSetting.attention).where(ChannelSetting.user_id == d.user_id)
        )
        suppressed = await s.scalar(
            select(Suppression.id).where(
                Suppression.org_id == d.org_id, Suppression.address == d.recipient.lower()
            )
        )
        account = await s.scalar(
            select(ConnectedAccount.status).where(ConnectedAccount.user_id == d.user_id)
        )
    delay = (d.due_at - d.updated_at).total_seconds() if d.due_at is not None else None
    return Observed(
        d.state, d.reason, last.type, d.attempts, delay, d.due_at, d.expires_at, attention,
        (last.detail or {}).get("tls"), d.diagnostic or "", suppressed is not None, account,
    )  # fmt: skip


def _quota_reset(now: datetime) -> datetime:
    """Next midnight in Pacific time, at least an hour away (Gmail's daily counters)."""
    pacific = ZoneInfo("America/Los_Angeles")
    local = now.astimezone(pacific)
    midnight = datetime(local.year, local.month, local.day, tzinfo=pacific) + timedelta(days=1)
    return max(midnight.astimezone(UTC), now + timedelta(hours=1))


def _assert_next(case: Case, o: Observed) -> None:
    nxt = case.next
    if nxt.kind == "final":
        assert o.delay is None, f"expected a final state, next attempt in {o.delay} s"
        return
    assert o.delay is not None, "expected a next attempt, found none"
    if nxt.kind == "schedule":
        low, high = nxt.seconds * (1 - JITTER), nxt.seconds * (1 + JITTER)
        assert low - 0.01 <= o.delay <= high + 0.01, f"next retry in {o.delay} s"
    elif nxt.kind == "exact":
        assert abs(o.delay - nxt.seconds) < 5, f"next retry in {o.delay} s"
    elif nxt.kind == "until-reconnect":
        assert o.due_at == o.expires_at, "parked mail waits until its lifetime ends at most"
    else:
        assert o.due_at is not None
        expected = _quota_reset(o.due_at - timedelta(seconds=o.delay))
        assert abs((o.due_at - expected).total_seconds()) < 5, f"paused until {o.due_at}"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_remote_fault(faults: Faults, tls_peer: TLSPeer, case: Case) -> None:
    if case.channel == "gmail":
        message_id = await _gmail_row(faults, case)
    else:
        message_id = await _smtp_row(faults, case, tls_peer)
    o = await _observe(faults, message_id)
    observed = (o.state, o.reason, o.event)
    assert observed == (case.state, case.reason, case.event), f"observed {observed}"
    assert o.attempts == (case.tries if case.attempts is None else case.attempts)
    _assert_next(case, o)
    if case.channel == "smtp":  # the relay's settings ask the user to act, or do not
        assert (o.attention is not None) is case.attention, o.attention
    if case.tls is not None and case.channel == "managed":
        assert o.tls == case.tls
    assert o.suppressed is case.suppressed
    if case.channel == "gmail":
        assert o.account == (case.account or "connected")
    if case.diagnostic is not None:
        assert case.diagnostic in o.diagnostic, o.diagnostic


def test_fault_table_in_docs_matches_the_matrix() -> None:
    """docs/reliability.md shows exactly the rows the test above checks (regenerate with
    `.venv/bin/python scripts/fault_table.py`)."""
    assert section_of(DOCS.read_text()) == render()
