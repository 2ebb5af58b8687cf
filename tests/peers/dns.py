"""DNSPeer: a real DNS server on loopback (UDP and TCP, one free port) serving a zone set in Python.

    dns = DNSPeer().start()
    dns.mx("example.org", (10, "mx1.example.org"), (20, "mx2.example.org"))
    dns.a("mx1.example.org", "127.0.0.1")
    dns.null_mx("nomail.example")
    dns.servfail("broken.example")
    settings = Settings(dns_nameservers=dns.nameserver)   # "127.0.0.1:PORT"

Names not in the zone answer NXDOMAIN; a name in the zone with no record of the asked type
answers NOERROR with no records (NODATA). Records may change while a test runs; every query is
counted. Answers are authoritative and carry the TTL given when the record was added.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSLogger, DNSServer

DEFAULT_TTL = 300


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass(frozen=True)
class _Record:
    rtype: str
    rdata: object
    ttl: int


class _ZoneResolver:
    """The dnslib resolver: answers from the peer's zone under its lock."""

    def __init__(self, peer: DNSPeer) -> None:
        self.peer = peer

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        return self.peer._answer(request)


class DNSPeer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._records: dict[str, list[_Record]] = {}
        self._nxdomain: set[str] = set()
        self._servfail: set[str] = set()
        self._silent: set[str] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._servers: list[DNSServer] = []

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """The `host:port` form `Settings.dns_nameservers` takes."""
        return f"{self.host}:{self.port}"

    def start(self) -> DNSPeer:
        logger = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        resolver = _ZoneResolver(self)
        last_error: OSError | None = None
        for _ in range(20):  # the TCP bind on the UDP port can lose a race; try another port
            udp = DNSServer(resolver, address=self.host, port=0, logger=logger)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, address=self.host, port=port, tcp=True, logger=logger)
            except OSError as exc:
                last_error = exc
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for s in self._servers:
                # A short poll interval keeps stop() quick (socketserver's default is 0.5 s).
                threading.Thread(
                    target=s.server.serve_forever, args=(0.05,), daemon=True, name="dns-peer"
                ).start()
            return self
        raise RuntimeError(f"no free port for the DNS peer: {last_error}")

    def stop(self) -> None:
        for s in self._servers:
            s.server.shutdown()
            s.server.server_close()
        self._servers = []

    def __enter__(self) -> DNSPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the zone -----------------------------------------------------------------------------

    def add(self, name: str, rtype: str, rdata: object, ttl: int = DEFAULT_TTL) -> None:
        """Add one record; `rdata` is a dnslib RD (A("1.2.3.4"), MX(...), ...)."""
        key = _norm(name)
        with self._lock:
            self._nxdomain.discard(key)
            self._records.setdefault(key, []).append(_Record(rtype.upper(), rdata, ttl))

    def a(self, name: str, *ips: str, ttl: int = DEFAULT_TTL) -> None:
        for ip in ips:
            self.add(name, "A", A(ip), ttl)

    def aaaa(self, name: str, *ips: str, ttl: int = DEFAULT_TTL) -> None:
        for ip in ips:
            self.add(name, "AAAA", AAAA(ip), ttl)

    def mx(self, name: str, *entries: tuple[int, str], ttl: int = DEFAULT_TTL) -> None:
        for preference, host in entries:
            target = "." if host == "." else host.rstrip(".") + "."
            self.add(name, "MX", MX(target, preference), ttl)

    def null_mx(self, name: str, ttl: int = DEFAULT_TTL) -> None:
        """RFC 7505: `name MX 0 .` — the domain accepts no mail."""
        self.add(name, "MX", MX(".", 0), ttl)

    def txt(self, name: str, text: str, ttl: int = DEFAULT_TTL) -> None:
        """One TXT record; long text is split into 255-octet strings as DNS requires."""
        raw = text.encode()
        chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
        self.add(name, "TXT", TXT(chunks), ttl)

    def nxdomain(self, name: str) -> None:
        """Remove `name` and make it answer NXDOMAIN (also the default for unknown names)."""
        key = _norm(name)
        with self._lock:
            self._records.pop(key, None)
            self._nxdomain.add(key)

    def servfail(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._servfail.add if on else self._servfail.discard)(_norm(name))

    def silent(self, name: str, on: bool = True) -> None:
        """Never answer queries for `name` (the client times out)."""
        with self._lock:
            (self._silent.add if on else self._silent.discard)(_norm(name))

    def remove(self, name: str, rtype: str | None = None) -> None:
        key = _norm(name)
        with self._lock:
            if rtype is None:
                self._records.pop(key, None)
            else:
                kept = [r for r in self._records.get(key, []) if r.rtype != rtype.upper()]
                self._records[key] = kept

    def query_count(self, name: str | None = None, rtype: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (qname, qtype), n in self.queries.items()
                if (name is None or qname == _norm(name)) and (rtype is None or qtype == rtype)
            )

    # -- answering (server threads) -----------------------------------------------------------

    def _answer(self, request: DNSRecord) -> DNSRecord:
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()
        with self._lock:
            self.queries[(qname, qtype)] += 1
            if qname in self._silent:
                raise DNSError("silent name")  # dnslib's handler then sends nothing
            if qname in self._servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            records = self._records.get(qname)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rec in records:
                if rec.rtype == qtype or qtype == "ANY":
                    reply.add_answer(
                        RR(request.q.qname, getattr(QTYPE, rec.rtype), rdata=rec.rdata, ttl=rec.ttl)
                    )
        return reply
