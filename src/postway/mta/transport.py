"""The transport map: fixed next hops for recipient domains, like Postfix's `transport(5)`.

    POSTWAY_TRANSPORT="example.net=127.0.0.1:2525,.example.org=mx.test,*=[::1]:2526"

An entry `domain=host[:port]` routes that domain; `.domain` routes its subdomains; `*` routes
every other domain. Hosts may be names or IP literals (IPv6 in brackets); the port defaults
to 25. A domain routed here is never looked up in MX records.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from postway.errors import InvalidInput

_HOST_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>\d+))?$"
)
_DOMAIN_RE = re.compile(r"^\.?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$")


@dataclass(frozen=True, slots=True)
class Relay:
    host: str  # a name, or an IP literal without brackets
    port: int = 25

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportMap:
    exact: dict[str, Relay] = field(default_factory=dict)
    suffixes: dict[str, Relay] = field(default_factory=dict)  # ".example.org" -> relay
    default: Relay | None = None

    def lookup(self, domain: str) -> Relay | None:
        """The relay for `domain`: an exact entry wins, then the longest `.parent` entry,
        then `*`; None means "look the domain up in DNS"."""
        domain = domain.rstrip(".").lower()
        if domain in self.exact:
            return self.exact[domain]
        labels = domain.split(".")
        for i in range(1, len(labels)):
            relay = self.suffixes.get("." + ".".join(labels[i:]))
            if relay is not None:
                return relay
        return self.default

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes or self.default)


def parse_relay(text: str) -> Relay:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> Relay; InvalidInput on anything else."""
    m = _HOST_RE.match(text.strip())
    if not m:
        raise InvalidInput(
            f"transport: {text!r} is not host[:port] (write IPv6 addresses in brackets, "
            "e.g. [::1]:2525)",
            field="transport",
        )
    host = m.group("v6") or m.group("name")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidInput(f"transport: {host!r} is not an IPv6 address", "transport") from exc
    port = int(m.group("port") or 25)
    if not 0 < port < 65536:
        raise InvalidInput(f"transport: port {port} is out of range in {text!r}", "transport")
    return Relay(host=host.lower(), port=port)


def parse_transport(text: str) -> TransportMap:
    """Parse the `POSTWAY_TRANSPORT` syntax (comma-separated `domain=host[:port]` entries).

    Invariant: the result routes each domain to at most one relay; a domain named twice is
    an error rather than a silent override.
    """
    exact: dict[str, Relay] = {}
    suffixes: dict[str, Relay] = {}
    default: Relay | None = None
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        domain, sep, target = entry.partition("=")
        domain = domain.strip().lower().rstrip(".")
        if not sep or not domain or not target.strip():
            raise InvalidInput(
                f"transport: {entry!r} is not domain=host[:port] "
                "(e.g. example.net=127.0.0.1:2525,*=127.0.0.1:2526)",
                field="transport",
            )
        relay = parse_relay(target)
        if domain == "*":
            if default is not None:
                raise InvalidInput("transport: `*` is named twice", field="transport")
            default = relay
            continue
        if not _DOMAIN_RE.match(domain):
            raise InvalidInput(f"transport: {domain!r} is not a domain name", field="transport")
        table = suffixes if domain.startswith(".") else exact
        if domain in table:
            raise InvalidInput(f"transport: {domain!r} is named twice", field="transport")
        table[domain] = relay
    return TransportMap(exact=exact, suffixes=suffixes, default=default)
