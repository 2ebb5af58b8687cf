"""The DNS peer answers real queries, over UDP and TCP, as its zone says."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver
import pytest


def _resolver(peer, tcp_timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [peer.host]
    r.port = peer.port
    r.lifetime = tcp_timeout
    return r


async def test_records_and_counts(dns_peer):
    dns_peer.mx("example.org", (20, "mx2.example.org"), (10, "mx1.example.org"), ttl=60)
    dns_peer.a("mx1.example.org", "127.0.0.1")
    dns_peer.aaaa("mx1.example.org", "::1")
    dns_peer.txt("sel._domainkey.example.org", "v=DKIM1; p=" + "A" * 400)
    r = _resolver(dns_peer)
    mx = await r.resolve("example.org", "MX")
    assert sorted((x.preference, str(x.exchange)) for x in mx) == [
        (10, "mx1.example.org."),
        (20, "mx2.example.org."),
    ]
    assert mx.rrset.ttl == 60
    assert [x.address for x in await r.resolve("mx1.example.org", "A")] == ["127.0.0.1"]
    assert [x.address for x in await r.resolve("mx1.example.org", "AAAA")] == ["::1"]
    txt = await r.resolve("sel._domainkey.example.org", "TXT", tcp=True)
    assert b"".join(txt[0].strings) == b"v=DKIM1; p=" + b"A" * 400
    assert dns_peer.query_count("example.org", "MX") == 1
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("mx1.example.org", "MX")


async def test_failures_and_live_changes(dns_peer):
    dns_peer.null_mx("nomail.example")
    dns_peer.servfail("broken.example")
    dns_peer.silent("slow.example")
    r = _resolver(dns_peer, tcp_timeout=0.5)
    (null,) = await r.resolve("nomail.example", "MX")
    assert null.preference == 0 and str(null.exchange) == "."
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("unknown.example", "MX")
    with pytest.raises(dns.resolver.NoNameservers):
        await r.resolve("broken.example", "MX")
    with pytest.raises(dns.exception.Timeout):
        await r.resolve("slow.example", "MX")
    dns_peer.servfail("broken.example", on=False)
    dns_peer.a("broken.example", "127.0.0.2")
    assert [x.address for x in await r.resolve("broken.example", "A")] == ["127.0.0.2"]
    dns_peer.nxdomain("broken.example")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("broken.example", "A")
