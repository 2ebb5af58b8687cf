"""Building blocks for tests that run Postway for real: test settings, a user with a token and
an HTTP client on the app, and a sender on a loopback relay. Imported by the conftest files
and by tests (a module of its own name, so no test has to import a `conftest`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from peers.tls import TLSPeer
from postway.config import Settings
from postway.runtime import Runtime
from postway.store.users import create_token, create_user


def make_settings(
    tmp_path: Path, database_url: str, tls_peer: TLSPeer, **extra: object
) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "secret_key": "test-secret-key-for-postway-tests-0123456789",
        "hostname": "postway.test",
        "base_url": "http://postway.test",
        "bounce_domain": "bounces.postway.test",
        "allow_private_relays": True,
        "smtp_ca_file": str(tls_peer.ca_file),
        "smtp_connect_timeout": 5.0,
        "smtp_command_timeout": 5.0,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "worker_poll_seconds": 0.05,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Account:
    email: str
    token: str
    client: httpx.AsyncClient


@dataclass
class Env:
    rt: Runtime
    app_client: httpx.AsyncClient

    async def account(self, email: str, *, admin: bool = False) -> Account:
        async with self.rt.db.session() as s, s.begin():
            user = await create_user(s, email, "correct horse battery", admin=admin)
            token = await create_token(s, user)
        client = httpx.AsyncClient(
            transport=self.app_client._transport,
            base_url="http://postway.test",
            headers={"Authorization": f"Bearer {token}"},
        )
        return Account(email, token, client)

    async def relay_sender(
        self, relay_port: int, email: str = "rep@acme.example", *, admin: bool = True
    ) -> tuple[Account, str]:
        """A user with one identity whose channel is a plain SMTP relay on loopback;
        returns the account and the identity id."""
        acct = await self.account(email, admin=admin)
        r = await acct.client.post("/api/v1/identities", json={"name": "Rep", "email": email})
        assert r.status_code == 201, r.text
        r2 = await acct.client.put(
            "/api/v1/delivery-channel",
            json={
                "channel": "smtp",
                "smtp": {"host": "127.0.0.1", "port": relay_port, "security": "none"},
            },
        )
        assert r2.status_code == 200, r2.text
        return acct, r.json()["id"]

    async def drain(self, rounds: int = 50) -> None:
        """Run the real worker until nothing is due (deferred mail may be due again soon)."""
        import asyncio

        idle = 0
        for _ in range(rounds):
            if await self.rt.worker.run_once() == 0:
                idle += 1
                if idle >= 3:
                    return
                await asyncio.sleep(0.1)
            else:
                idle = 0
