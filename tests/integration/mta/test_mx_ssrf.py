"""SSRF through the managed channel (issue 7, defect 5): MX and A/AAAA answers are screened.

A real DNS peer names mail servers whose addresses are not global. Every such target here is
on loopback, where a listener counts connections: Postway must not connect unless the operator
allowed internal servers (POSTWAY_ALLOW_PRIVATE_RELAYS) or routed the domain in the transport
map. The other non-global ranges are covered by tests/unit/domain/test_network.py; no test
makes Postway dial an address outside loopback.
"""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import AAAA, A
from mta_support import message, settings_for

from peers.smtp import ScriptedSMTPServer
from postway.channels.managed import ManagedChannel
from postway.channels.registry import ChannelRegistry
from postway.domain.states import DeliveryState
from postway.mta.resolver import Resolver, RouteError, RouteRefused
from postway.store.identities import mark_verified

# (record type, address as the DNS peer serves it, as Postway reports it): each reaches the
# loopback listener when dialled (0.0.0.0 and ::ffff:127.0.0.1 both land on 127.0.0.1).
LOOPBACK_TARGETS = [
    pytest.param("A", "127.0.0.1", "127.0.0.1", id="A-127.0.0.1"),
    pytest.param("AAAA", "::ffff:7f00:1", "::ffff:127.0.0.1", id="AAAA-ipv4-mapped"),
    pytest.param("A", "0.0.0.0", "0.0.0.0", id="A-0.0.0.0"),  # noqa: S104 - a DNS answer
]


def _point_mx(dns_peer: Any, domain: str, rtype: str, address: str) -> None:
    dns_peer.mx(domain, (10, f"mx.{domain}"))
    dns_peer.add(f"mx.{domain}", rtype, _rdata(rtype, address))


def _rdata(rtype: str, address: str) -> object:
    return A(address) if rtype == "A" else AAAA(address)


def _assert_not_dialled(srv: ScriptedSMTPServer) -> None:
    assert srv.sessions_opened == 0 and srv.commands == [] and srv.received == []


@pytest.mark.parametrize(("rtype", "served", "shown"), LOOPBACK_TARGETS)
async def test_mx_at_a_non_global_address_is_not_dialled(
    tmp_path, dns_peer, smtp_server, managed, rtype, served, shown
):
    srv = await smtp_server()
    _point_mx(dns_peer, "evil.example", rtype, served)
    s = settings_for(tmp_path, dns_peer, allow_private_relays=False)
    (out,) = await managed(port=srv.port, settings=s).deliver(message("ceo@evil.example"))
    _assert_not_dialled(srv)
    # Final at once (a retry would find the same records), and not a bounce: no suppression.
    assert out.state is DeliveryState.FAILED and out.hard is False
    assert (out.reason, out.status) == ("hostunknown", "5.4.4")
    assert out.diagnostic is not None
    assert f"mx.evil.example is {shown}" in out.diagnostic
    assert "not on the public internet" in out.diagnostic
    assert "POSTWAY_ALLOW_PRIVATE_RELAYS=1" in out.diagnostic
    assert out.remote_mta is None and out.reply_code is None


async def test_implicit_mx_at_a_non_global_address_is_not_dialled(
    tmp_path, dns_peer, smtp_server, managed
):
    srv = await smtp_server()
    dns_peer.a("evil.example", "127.0.0.1")  # no MX: the domain itself would be the host
    s = settings_for(tmp_path, dns_peer, allow_private_relays=False)
    (out,) = await managed(port=srv.port, settings=s).deliver(message("ceo@evil.example"))
    _assert_not_dialled(srv)
    assert out.state is DeliveryState.FAILED
    assert "evil.example is 127.0.0.1 (loopback)" in (out.diagnostic or "")


@pytest.mark.parametrize(("rtype", "served", "shown"), LOOPBACK_TARGETS)
async def test_allow_private_relays_dials_the_same_mx(
    tmp_path, dns_peer, smtp_server, managed, rtype, served, shown
):
    srv = await smtp_server()
    _point_mx(dns_peer, "intranet.example", rtype, served)
    s = settings_for(tmp_path, dns_peer, allow_private_relays=True)
    (out,) = await managed(port=srv.port, settings=s).deliver(message("ops@intranet.example"))
    assert out.state is DeliveryState.DELIVERED
    assert out.detail["remote_ip"] == shown
    assert [r.rcpt_tos for r in srv.received] == [["ops@intranet.example"]]


async def test_transport_map_route_to_loopback_is_dialled(tmp_path, dns_peer, smtp_server, managed):
    srv = await smtp_server()
    _point_mx(dns_peer, "intranet.example", "A", "127.0.0.1")  # not asked: the map wins
    s = settings_for(
        tmp_path,
        dns_peer,
        allow_private_relays=False,
        transport=f"intranet.example=127.0.0.1:{srv.port}",
    )
    ch = managed(settings=s)
    (out,) = await ch.deliver(message("ops@intranet.example"))
    assert out.state is DeliveryState.DELIVERED and len(srv.received) == 1
    # ...while a domain the map does not name is still screened.
    other = await smtp_server()
    _point_mx(dns_peer, "evil.example", "A", "127.0.0.1")
    ch = managed(port=other.port, settings=s)
    (out,) = await ch.deliver(message("ceo@evil.example"))
    assert out.state is DeliveryState.FAILED
    _assert_not_dialled(other)


async def test_route_keeps_only_global_addresses(dns_peer):
    # Resolution only: nothing is dialled, so a public address may appear in the zone.
    dns_peer.mx("mixed.example", (10, "a.mixed.example"), (20, "b.mixed.example"))
    dns_peer.a("a.mixed.example", "169.254.169.254")  # cloud metadata: dropped with its host
    dns_peer.a("b.mixed.example", "10.0.0.5", "93.184.216.34")
    dns_peer.aaaa("b.mixed.example", "64:ff9b::a9fe:a9fe", "2606:2800:220:1::1")
    route = await Resolver(dns_peer.nameserver, timeout=1.0, lifetime=1.5).route("mixed.example")
    assert [(h.name, h.addresses) for h in route.hosts] == [
        ("b.mixed.example", ("93.184.216.34", "2606:2800:220:1::1"))
    ]


async def test_refused_mx_with_another_mx_failing_temporarily_is_retried(dns_peer):
    # The host whose lookup timed out may have a public address: try again later.
    dns_peer.mx("flaky.example", (10, "a.flaky.example"), (20, "b.flaky.example"))
    dns_peer.servfail("a.flaky.example")
    dns_peer.a("b.flaky.example", "127.0.0.1")
    r = Resolver(dns_peer.nameserver, timeout=0.5, lifetime=1.0)
    with pytest.raises(RouteError) as err:
        await r.route("flaky.example")
    assert not err.value.permanent and not isinstance(err.value, RouteRefused)
    dns_peer.servfail("a.flaky.example", False)
    dns_peer.a("a.flaky.example", "192.168.1.1")
    with pytest.raises(RouteRefused) as refused:
        await Resolver(dns_peer.nameserver, timeout=0.5, lifetime=1.0).route("flaky.example")
    assert refused.value.permanent
    assert [(h, ip) for h, ip, _ in refused.value.refused] == [
        ("a.flaky.example", "192.168.1.1"),
        ("b.flaky.example", "127.0.0.1"),
    ]


@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "allowed"])
async def test_api_shows_why_the_mx_was_not_dialled(env, dns_peer, smtp_server, allowed):
    """Through the real worker and API: the production wiring reads the setting."""
    srv = await smtp_server()
    _point_mx(dns_peer, "evil.example", "A", "127.0.0.1")
    s = env.rt.settings
    s.allow_private_relays = allowed
    s.dns_nameservers = dns_peer.nameserver
    # The composition root's managed channel, with the MX port pointed at the listener.
    env.rt.registry = ChannelRegistry(
        s, env.rt.box, managed=lambda: ManagedChannel(s, mx_port=srv.port)
    )
    acct = await env.account("rep@acme.example", admin=True)
    r = await acct.client.post(
        "/api/v1/identities", json={"name": "Rep", "email": "rep@acme.example"}
    )
    assert r.status_code == 201, r.text
    async with env.rt.db.session() as db, db.begin():
        await mark_verified(db, "rep@acme.example")
    r = await acct.client.post(
        "/api/v1/messages",
        json={"identity_id": r.json()["id"], "to": ["ceo@evil.example"], "subject": "Hi",
              "text": "x"},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    await env.drain()
    d = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()["deliveries"][0]
    if allowed:
        assert d["state"] == "delivered" and len(srv.received) == 1
        return
    _assert_not_dialled(srv)
    assert (d["state"], d["reason"]) == ("failed", "hostunknown")
    assert "mx.evil.example is 127.0.0.1 (loopback)" in d["diagnostic"]
    assert "not on the public internet" in d["diagnostic"]
    assert (await acct.client.get("/api/v1/suppressions")).json() == []
