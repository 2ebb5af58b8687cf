"""Which IP addresses Postway may dial when the address was learnt from outside.

An MX or A/AAAA answer, or a relay host a user typed, must not steer Postway into the network
it runs in (SSRF): loopback services, cloud metadata at 169.254.169.254, private ranges. Only
globally routable unicast addresses pass, unless the operator allows internal targets.

The ranges are written out here rather than taken from `ipaddress.is_global`, which (on
Python 3.11) passes multicast, 240/4 and every IPv6 form that embeds an IPv4 address
(`::127.0.0.1`, `64:ff9b::7f00:1`, `2002:7f00:1::`). Forms that embed an IPv4 address
are refused whole: no mail server needs to be reached through them, and refusing is simpler
than unpacking each encoding correctly.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address

# Most specific first: the first match names the kind in the error a user reads.
_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), kind)
    for net, kind in (
        ("127.0.0.0/8", "loopback"),
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10)"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "IETF protocol assignment (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("198.18.0.0/15", "benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)

_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), kind)
    for net, kind in (
        ("::1/128", "loopback"),
        ("::/128", "unspecified"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("::/96", "IPv4-compatible"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001:2::/48", "benchmarking"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "IETF protocol assignment (2001::/23)"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

# Everything routable on the IPv6 internet today is inside 2000::/3; the rest is reserved.
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")


def parse_ip(text: str) -> IPAddress | None:
    """An address from `127.0.0.1`, `::1`, `[::1]` or `fe80::1%eth0`; None if it is none."""
    bare = text.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    bare = bare.split("%", 1)[0]  # a zone index only ever qualifies a link-local address
    try:
        return ip_address(bare)
    except ValueError:
        return None


def non_global_kind(address: str | IPAddress) -> str | None:
    """Why `address` is not a public internet address ("loopback", "NAT64", ...), or None
    when it is one Postway may dial.

    Invariant: fails closed. Text that is not an IP address is reported as such, and an IPv6
    address outside 2000::/3 is refused even when no named range above covers it.
    """
    ip = address if isinstance(address, IPv4Address | IPv6Address) else parse_ip(address)
    if ip is None:
        return "not an IP address"
    if isinstance(ip, IPv4Address):
        return next((kind for net, kind in _V4 if ip in net), None)
    kind = next((kind for net, kind in _V6 if ip in net), None)
    if kind is None and ip not in _V6_GLOBAL_UNICAST:
        kind = "reserved (outside 2000::/3)"
    return kind


def is_global(address: str | IPAddress) -> bool:
    """True when `address` is a public unicast address (see `non_global_kind`)."""
    return non_global_kind(address) is None
