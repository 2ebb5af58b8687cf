"""Routes over real DNS: MX order, implicit MX, next-MX fallback, transport map, TLS, reuse."""

from __future__ import annotations

import random

import pytest
from mta_support import message, settings_for

from peers.smtp import ScriptedSMTPServer, free_port
from postway.domain.states import DeliveryState
from postway.mta.resolver import Resolver, RouteError


def _resolver(dns_peer, **kw) -> Resolver:
    # The zone below uses private addresses (10.0.0.x, fd00::): internal servers, allowed.
    return Resolver(dns_peer.nameserver, timeout=1.0, lifetime=1.5, allow_private=True, **kw)


async def test_mx_order_and_ties(dns_peer):
    dns_peer.mx(
        "example.org", (20, "b.example.org"), (10, "a1.example.org"), (10, "a2.example.org")
    )
    for name, ip in [("a1", "10.0.0.1"), ("a2", "10.0.0.2"), ("b", "10.0.0.3")]:
        dns_peer.a(f"{name}.example.org", ip)
    dns_peer.aaaa("b.example.org", "fd00::3")
    seen = set()
    for seed in range(8):
        route = await _resolver(dns_peer, rng=random.Random(seed)).route("example.org")
        names = [h.name for h in route.hosts]
        assert names[2] == "b.example.org" and set(names[:2]) == {
            "a1.example.org",
            "a2.example.org",
        }
        seen.add(tuple(names[:2]))
        assert route.hosts[2].addresses == ("10.0.0.3", "fd00::3")
    assert len(seen) == 2  # equal preferences come in both orders


async def test_cache_and_implicit_mx(dns_peer):
    dns_peer.a("plain.example", "10.0.0.9")  # no MX: the domain itself is the host
    r = _resolver(dns_peer)
    route = await r.route("plain.example")
    assert route.source == "implicit-mx" and route.hosts[0].addresses == ("10.0.0.9",)
    before = dns_peer.query_count()
    await r.route("plain.example")
    assert dns_peer.query_count() == before  # answered from the TTL cache


async def test_route_errors(dns_peer):
    dns_peer.null_mx("nomail.example")
    dns_peer.silent("slow.example")
    dns_peer.mx("nohosts.example", (10, "missing.nohosts.example"))
    r = Resolver(dns_peer.nameserver, timeout=0.3, lifetime=0.5)
    for domain, permanent, reason in [
        ("nomail.example", True, "notaccept"),
        ("unknown.example", True, "hostunknown"),
        ("nohosts.example", True, "hostunknown"),
        ("slow.example", False, "networkerror"),
    ]:
        with pytest.raises(RouteError) as err:
            await r.route(domain)
        assert (err.value.permanent, err.value.reason) == (permanent, reason), domain


async def test_fallback_to_next_mx_on_refused(dns_peer, smtp_server, managed):
    port = free_port()
    srv = await smtp_server(port=port)
    dns_peer.mx("example.org", (10, "mx1.example.org"), (20, "mx2.example.org"))
    dns_peer.a("mx1.example.org", "127.0.0.2")  # nothing listens there: refused
    dns_peer.a("mx2.example.org", "127.0.0.1")
    (out,) = await managed(port=port).deliver(message("a@example.org"))
    assert out.state is DeliveryState.DELIVERED and out.remote_mta == "mx2.example.org"
    assert len(srv.received) == 1


async def test_preferred_mx_used_first_and_busy_mx_skipped(dns_peer, smtp_server, managed):
    port = free_port()
    backup = await smtp_server(port=port)  # 127.0.0.1
    primary = await smtp_server(host="127.0.0.2", port=port)
    dns_peer.mx("example.org", (10, "mx1.example.org"), (20, "mx2.example.org"))
    dns_peer.a("mx1.example.org", "127.0.0.2")
    dns_peer.a("mx2.example.org", "127.0.0.1")
    ch = managed(port=port)
    (out,) = await ch.deliver(message("a@example.org"))
    assert out.remote_mta == "mx1.example.org" and len(primary.received) == 1
    primary.greeting = "421 4.3.2 Service not available, try later"
    await ch.aclose()  # drop the cached session so the next message greets anew
    (out,) = await managed(port=port).deliver(message("b@example.org"))
    assert out.state is DeliveryState.DELIVERED and out.remote_mta == "mx2.example.org"
    assert len(backup.received) == 1


async def test_all_mx_unreachable_defers(dns_peer, managed):
    dns_peer.mx("example.org", (10, "mx1.example.org"))
    dns_peer.a("mx1.example.org", "127.0.0.1")
    (out,) = await managed(port=free_port()).deliver(message("a@example.org"))
    assert out.state is DeliveryState.DEFERRED and out.reason == "networkerror"
    assert "refused" in out.diagnostic


async def test_transport_map_overrides_dns(tmp_path, dns_peer, smtp_server, managed):
    srv = await smtp_server()
    dns_peer.null_mx("example.net")  # would bounce if DNS were asked
    s = settings_for(tmp_path, dns_peer, transport=f"example.net=127.0.0.1:{srv.port}")
    (out,) = await managed(settings=s).deliver(message("a@example.net"))
    assert out.state is DeliveryState.DELIVERED
    assert dns_peer.query_count("example.net") == 0


async def test_starttls_offered_is_used(dns_peer, smtp_server, managed, tls_peer):
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")
    srv = await smtp_server(tls_context=tls_peer.server_context())
    (out,) = await managed(port=srv.port).deliver(message("a@example.org"))
    assert out.state is DeliveryState.DELIVERED and out.detail["tls"] == "yes"
    assert srv.received[0].tls


async def test_starttls_required(tmp_path, dns_peer, smtp_server, managed, tls_peer):
    dns_peer.mx("example.org", (10, "localhost"))  # the test cert names localhost
    dns_peer.a("localhost", "127.0.0.1")
    srv = await smtp_server(tls_context=tls_peer.server_context(), require_starttls=True)
    s = settings_for(tmp_path, dns_peer, smtp_ca_file=str(tls_peer.ca_file))
    ch = managed(port=srv.port, settings=s, tls_mode="require")
    (out,) = await ch.deliver(message("a@example.org"))
    assert out.state is DeliveryState.DELIVERED and srv.received[0].tls
    plain = await smtp_server()
    ch = managed(port=plain.port, settings=s, tls_mode="require")
    (out,) = await ch.deliver(message("a@example.org"))
    assert out.state is DeliveryState.DEFERRED and "STARTTLS" in out.diagnostic
    assert plain.received == []


async def test_sessions_reused_and_pipelined(dns_peer, smtp_server, managed):
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")
    srv = await smtp_server()
    ch = managed(port=srv.port, max_messages=4)
    for i in range(10):
        (out,) = await ch.deliver(message(f"r{i}@example.org"))
        assert out.state is DeliveryState.DELIVERED
    assert len(srv.received) == 10
    assert srv.sessions_opened == 3  # 4 + 4 + 2 messages
    assert sorted(srv.transactions_per_session.values()) == [2, 4, 4]
    verbs = srv.verbs()
    assert verbs.count("RSET") == 7  # between transactions in a session
    first = srv.commands_of(1)
    assert [c.verb for c in first[:4]] == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert [c.pipelined for c in first[1:4]] == [False, True, True]


async def test_no_pipelining_when_not_offered(dns_peer, smtp_server, managed):
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")
    srv = await smtp_server(omit_extensions=["PIPELINING"])
    (out,) = await managed(port=srv.port).deliver(message("a@example.org"))
    assert out.state is DeliveryState.DELIVERED
    assert not any(c.pipelined for c in srv.commands)


async def test_connection_limit_per_destination(dns_peer, smtp_server, managed):
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")
    srv = await smtp_server()
    ch = managed(port=srv.port, max_connections=2)
    outs = await ch.deliver(message(*(f"r{i}@example.org" for i in range(8))))
    assert {o.state for o in outs} == {DeliveryState.DELIVERED}
    assert srv.peak_sessions <= 2 and srv.sessions_opened <= 2
    assert len(srv.received) == 8


async def test_stale_pooled_session_is_replaced(dns_peer, managed):
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")
    port = free_port()
    async with ScriptedSMTPServer(port=port) as first:
        ch = managed(port=port)
        await ch.deliver(message("a@example.org"))
        assert first.sessions_opened == 1
    async with ScriptedSMTPServer(port=port) as second:  # the old session is dead now
        (out,) = await ch.deliver(message("b@example.org"))
        assert out.state is DeliveryState.DELIVERED and len(second.received) == 1
