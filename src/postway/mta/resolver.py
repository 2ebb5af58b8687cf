"""Where mail for a domain goes: the transport map first, then MX records, then A/AAAA.

Results are cached for their DNS TTL (negative answers for a short, fixed time); temporary
failures are never cached, so the next attempt asks again.

Addresses learnt from DNS are screened: a non-global one (loopback, private, link-local,
NAT64, ...: see `postway.domain.network`) is never put in a route, so an MX record cannot
steer Postway into the network it runs in. Transport-map routes are the operator's own and are
not screened; `allow_private` turns screening off for networks where MX hosts are internal.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from postway.domain.network import non_global_kind
from postway.errors import InvalidInput, PostwayError
from postway.mta.transport import Relay, TransportMap

NEGATIVE_TTL = 60.0  # seconds a "no such name / no such record" answer is remembered
MAX_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class MailHost:
    """One server to try: its name (for TLS and logs), preference and addresses in order."""

    name: str
    addresses: tuple[str, ...]
    port: int = 25
    preference: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    """The servers for one recipient domain, in the order they must be tried."""

    domain: str
    hosts: tuple[MailHost, ...]
    source: Literal["transport", "mx", "implicit-mx"]


class RouteError(PostwayError):
    """No usable route. `permanent` failures (no such domain, null MX) bounce; the others are
    retried later. `reason` is a Sisimai reason; `status` an enhanced status code."""

    def __init__(self, message: str, *, permanent: bool, reason: str, status: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = reason
        self.status = status


class RouteRefused(RouteError):
    """DNS named mail servers for the domain, but only at addresses Postway will not dial.

    Permanent. Postfix bounces an MX that points back at itself ("mail for X loops back to
    myself", 5.4.6), which is what an MX on loopback is; addresses dropped by its DNS reply
    filter defer instead (4.7.0) until the queue lifetime ends, which only repeats the same
    answer for days: the records will not change by themselves, so the sender hears now.
    """

    def __init__(self, domain: str, refused: list[tuple[str, str, str]]) -> None:
        shown = "; ".join(f"{name} is {ip} ({kind})" for name, ip, kind in refused[:4])
        more = f"; and {len(refused) - 4} more" if len(refused) > 4 else ""
        super().__init__(
            f"no usable mail server for {domain}: its mail servers resolve only to addresses "
            f"that are not on the public internet ({shown}{more}); Postway does not connect to "
            "those (route the domain in POSTWAY_TRANSPORT or set "
            "POSTWAY_ALLOW_PRIVATE_RELAYS=1 to deliver to internal mail servers)",
            permanent=True, reason="hostunknown", status="5.4.4",
        )  # fmt: skip
        self.refused = refused


def _temporary(message: str) -> RouteError:
    return RouteError(message, permanent=False, reason="networkerror", status="4.4.3")


def _no_host(domain: str) -> RouteError:
    return RouteError(
        f"the domain {domain} does not exist in DNS", permanent=True, reason="hostunknown",
        status="5.1.2",
    )  # fmt: skip


def parse_nameservers(text: str) -> list[tuple[str, int]]:
    """`"10.0.0.1, 127.0.0.1:5353, [::1]:53"` -> [(host, port), ...]."""
    servers = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, "53"
        if not port.isdigit():
            raise InvalidInput(f"dns_nameservers: bad port in {entry!r}", field="dns_nameservers")
        servers.append((host, int(port)))
    return servers


class _Answer:
    """A cached lookup result: records (as text) or a negative answer."""

    __slots__ = ("expires", "records", "nxdomain")

    def __init__(self, records: list[str], nxdomain: bool, ttl: float) -> None:
        self.records = records
        self.nxdomain = nxdomain
        self.expires = time.monotonic() + ttl


class Resolver:
    """Async DNS lookups with a TTL cache, and the route logic on top.

    The cache is per instance (one instance per process, built by the composition root).
    """

    def __init__(
        self,
        nameservers: str = "",
        transport: TransportMap | None = None,
        *,
        timeout: float = 5.0,
        lifetime: float = 10.0,
        rng: random.Random | None = None,
        mx_port: int = 25,
        allow_private: bool = False,
    ) -> None:
        servers = parse_nameservers(nameservers)
        if servers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        else:
            self._dns = dns.asyncresolver.Resolver()
        self._dns.timeout = timeout
        self._dns.lifetime = lifetime
        self._transport = transport or TransportMap()
        self._rng = rng or random.Random()
        self._cache: dict[tuple[str, str], _Answer] = {}
        self._mx_port = mx_port  # 25 on the internet; tests and demos point it elsewhere
        self._allow_private = allow_private  # POSTWAY_ALLOW_PRIVATE_RELAYS

    async def lookup(self, name: str, rtype: str) -> _Answer:
        """Records of one type for one name. Raises RouteError (temporary) on SERVFAIL or
        timeout; NXDOMAIN and "no records" come back as answers, not errors."""
        key = (name.lower().rstrip("."), rtype)
        hit = self._cache.get(key)
        if hit is not None and hit.expires > time.monotonic():
            return hit
        try:
            answer = await self._dns.resolve(key[0] + ".", rtype, search=False)
        except dns.resolver.NXDOMAIN:
            result = _Answer([], nxdomain=True, ttl=NEGATIVE_TTL)
        except dns.resolver.NoAnswer:
            result = _Answer([], nxdomain=False, ttl=NEGATIVE_TTL)
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise _temporary(f"DNS lookup of {rtype} for {key[0]} failed: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise _temporary(f"DNS lookup of {rtype} for {key[0]} failed: {exc}") from exc
        else:
            ttl = min(float(answer.rrset.ttl if answer.rrset else NEGATIVE_TTL), MAX_TTL)
            result = _Answer([r.to_text() for r in answer], nxdomain=False, ttl=ttl)
        self._cache[key] = result
        return result

    async def addresses(self, name: str) -> tuple[list[str], bool]:
        """IPv4 then IPv6 addresses of `name`, and whether the name does not exist."""
        v4 = await self.lookup(name, "A")
        if v4.nxdomain:
            return [], True
        v6 = await self.lookup(name, "AAAA")
        return v4.records + v6.records, False

    async def route(self, domain: str) -> Route:
        """The route for a recipient domain (IDNs in their A-label form).

        Invariants, in the spirit of RFC 5321 5.1:
        - a transport-map entry wins and DNS is not asked for MX;
        - MX hosts are ordered by preference, lowest first; hosts of equal preference are in
          random order, so load spreads as their owner intends;
        - no MX record (NODATA) means the domain itself is the mail host (implicit MX);
        - a null MX (RFC 7505, `MX 0 .`) or NXDOMAIN is permanent: the domain takes no mail;
        - MX hosts without addresses are skipped; if none is left the failure is temporary
          when any lookup failed temporarily, permanent otherwise;
        - a SERVFAIL or timeout anywhere that leaves no host is a temporary failure;
        - unless `allow_private`, no address learnt from DNS that is not global is in the
          route (the host keeps its other addresses); when that leaves no host, and no lookup
          failed temporarily, the failure is RouteRefused (permanent, nothing was dialled).
        """
        domain = domain.lower().rstrip(".")
        relay = self._transport.lookup(domain)
        if relay is not None:
            return Route(domain, (await self._relay_host(relay),), "transport")
        mx = await self.lookup(domain, "MX")
        if mx.nxdomain:
            raise _no_host(domain)
        refused: list[tuple[str, str, str]] = []  # (host, address, kind) kept out of the route
        if not mx.records:
            addrs, missing = await self.addresses(domain)
            if not addrs:
                raise _no_host(domain) if missing else RouteError(
                    f"the domain {domain} has no MX and no address records",
                    permanent=True, reason="hostunknown", status="5.1.2",
                )  # fmt: skip
            usable = self._screen(domain, addrs, refused)
            if not usable:
                raise RouteRefused(domain, refused)
            return Route(domain, (MailHost(domain, usable, self._mx_port),), "implicit-mx")
        entries = [_parse_mx(r) for r in mx.records]
        real = [(p, h) for p, h in entries if h != "."]
        if not real:
            raise RouteError(
                f"the domain {domain} publishes a null MX: it accepts no mail (RFC 7505)",
                permanent=True, reason="notaccept", status="5.1.10",
            )  # fmt: skip
        hosts: list[MailHost] = []
        temp_error: RouteError | None = None
        for pref, name in self._order(real):
            try:
                addrs, _ = await self.addresses(name)
            except RouteError as exc:
                temp_error = exc
                continue
            usable = self._screen(name, addrs, refused)
            if usable:
                hosts.append(MailHost(name, usable, self._mx_port, pref))
        if not hosts:
            if temp_error is not None:
                raise temp_error
            if refused:
                raise RouteRefused(domain, refused)
            raise RouteError(
                f"no mail server of {domain} has an address in DNS",
                permanent=True, reason="hostunknown", status="5.4.4",
            )  # fmt: skip
        return Route(domain, tuple(hosts), "mx")

    def _screen(
        self, host: str, addrs: list[str], refused: list[tuple[str, str, str]]
    ) -> tuple[str, ...]:
        """The addresses of `host` Postway may dial; the others are added to `refused`."""
        if self._allow_private:
            return tuple(addrs)
        usable = []
        for address in addrs:
            kind = non_global_kind(address)
            if kind is None:
                usable.append(address)
            else:
                refused.append((host, address, kind))
        return tuple(usable)

    def _order(self, entries: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
        shuffled = list(entries)
        self._rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda e: e[0])  # sort is stable: ties stay shuffled

    async def _relay_host(self, relay: Relay) -> MailHost:
        if relay.is_ip:
            return MailHost(relay.host, (relay.host,), relay.port)
        addrs, _ = await self.addresses(relay.host)
        if not addrs:
            raise _temporary(f"the transport host {relay.host} has no address in DNS")
        return MailHost(relay.host, tuple(addrs), relay.port)


def _parse_mx(text: str) -> tuple[int, str]:
    pref, _, host = text.partition(" ")
    host = host.strip().lower()
    return int(pref), "." if host == "." else host.rstrip(".")
