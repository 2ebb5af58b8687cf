"""A throwaway certificate authority and a server certificate for loopback TLS peers.

The CA is made fresh per test session (trustme), so no test ever trusts a real CA by
accident and nothing secret is kept on disk beyond the temporary folder.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class TLSPeer:
    """A CA, a certificate for `localhost`/127.0.0.1/::1 signed by it, and the CA's PEM file.

    `ca_file` is what a client under test is told to trust (e.g. `Settings.smtp_ca_file`).
    """

    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path
    _server_ctx: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def create(cls, directory: Path) -> TLSPeer:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert(*SERVER_NAMES)
        ca_file = directory / "test-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca=ca, cert=cert, ca_file=ca_file)

    def server_context(self) -> ssl.SSLContext:
        """Server-side context presenting the loopback certificate (made once, then shared)."""
        if self._server_ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.cert.configure_cert(ctx)
            self._server_ctx = ctx
        return self._server_ctx

    def client_context(self) -> ssl.SSLContext:
        """Client-side context that trusts only the test CA (hostname checks stay on)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx
