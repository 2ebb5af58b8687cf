"""The one address check behind the relay check and the managed channel's MX screening.

Pure function tests: nothing here dials anything, so public addresses may appear as inputs.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postway.domain.network import is_global, non_global_kind, parse_ip

REFUSED = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.10", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),  # a public IPv4 inside is still refused: whole range
    ("::ffff:0:127.0.0.1", "IPv4-translated"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::0.0.0.2", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64"),
    ("64:ff9b::a9fe:a9fe", "NAT64"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("100::1", "discard-only"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "benchmarking"),
    ("2001:db8::1", "documentation"),
    ("2001:10::1", "IETF protocol assignment"),
    ("2002:7f00:1::", "6to4"),
    ("2002:a9fe:a9fe::1", "6to4"),
    ("3fff::1", "documentation"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::101", "multicast"),
    ("4000::1", "reserved"),  # outside 2000::/3, no named range: refused anyway
    ("[::1]", "loopback"),
    ("[::127.0.0.1]", "IPv4-compatible"),
]

ACCEPTED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.1",  # just above
    "100.63.255.255",  # just below CGNAT
    "100.128.0.1",  # just above
    "198.17.255.255",
    "198.20.0.1",
    "223.255.255.255",  # just below multicast
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "[2001:4860:4860::8888]",
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_global_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    found = non_global_kind(address)
    assert found is not None and kind in found, (address, found)
    assert not is_global(address)


@pytest.mark.parametrize("address", ACCEPTED)
def test_public_unicast_addresses_pass(address: str) -> None:
    assert non_global_kind(address) is None
    assert is_global(address)


@pytest.mark.parametrize("text", ["", "mx.example.org", "127.1", "1.2.3.4.5", "::g", "[1.2.3.4"])
def test_text_that_is_not_an_address_fails_closed(text: str) -> None:
    assert parse_ip(text) is None
    assert non_global_kind(text) == "not an IP address"
    assert not is_global(text)


def test_accepts_address_objects() -> None:
    assert non_global_kind(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert non_global_kind(ipaddress.ip_address("2001:4860:4860::8888")) is None


@given(st.ip_addresses(v=4))
def test_stricter_than_the_standard_library_for_ipv4(ip: ipaddress.IPv4Address) -> None:
    # Whatever Python calls non-global, we refuse too (we also refuse multicast, 240/4, ...).
    if not ip.is_global:
        assert non_global_kind(ip) is not None


@given(st.ip_addresses(v=6))
def test_ipv6_passes_only_inside_global_unicast(ip: ipaddress.IPv6Address) -> None:
    if non_global_kind(ip) is None:
        assert ip in ipaddress.IPv6Network("2000::/3")
        assert ip.is_global
        assert ip.ipv4_mapped is None and ip.sixtofour is None and ip.teredo is None


@given(st.ip_addresses(v=4))
def test_every_ipv4_embedding_is_refused(ip: ipaddress.IPv4Address) -> None:
    n = int(ip)
    embedded = [
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0xFFFF << 48) | n),  # ::ffff:0:a.b.c.d
        ipaddress.IPv6Address(n),  # ::a.b.c.d
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # 64:ff9b::a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),  # 2002:AABB:CCDD::
    ]
    for address in embedded:
        assert non_global_kind(address) is not None, address
