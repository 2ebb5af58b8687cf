"""The managed channel, and the DKIM key it signs with, are built once per process and reused
for every message: not rebuilt (nor the key file read again) per message or per batch.

Observed without mocking: the registry's channel is the same object across deliveries, and
after the key file is removed between two deliveries the second message is still signed with
the key loaded for the first (a channel built per message would make and use a new key)."""

from __future__ import annotations

from pathlib import Path

import dkim
from integration_support import make_settings

from peers.tls import TLSPeer
from postway.delivery.submit import SendRequest, submit_message
from postway.mta.dkim import KEY_FILES, load_or_create_key
from postway.runtime import Runtime
from postway.store.identities import create_identity, mark_verified
from postway.store.users import create_user, principal_of


async def test_channel_and_key_built_once_across_deliveries(
    tmp_path: Path, database_url: str, tls_peer: TLSPeer, smtp_server
):
    srv = await smtp_server()
    s = make_settings(tmp_path, database_url, tls_peer, transport=f"*=127.0.0.1:{srv.port}")
    rt = Runtime(s)
    await rt.start()
    try:
        async with rt.db.session() as db, db.begin():
            who = principal_of(await create_user(db, "rep@acme.example", "password123"))
            ident = await create_identity(db, who, name="Rep", email="rep@acme.example")
            await mark_verified(db, "rep@acme.example")

        async def send_one(i: int) -> None:
            async with rt.db.session() as db, db.begin():
                await submit_message(
                    db, s, who,
                    SendRequest(identity_id=ident.id, to=[f"r{i}@d.example"], text=f"m{i}"),
                )  # fmt: skip
            assert await rt.worker.run_once() == 1  # a batch of its own

        await send_one(1)
        channel = rt.registry.managed()
        key_file = Path(s.data_dir) / KEY_FILES[s.dkim_algorithm]
        first = load_or_create_key(s.data_dir, s.bounce_domain, s.dkim_selector, s.dkim_algorithm)
        key_file.unlink()  # a channel built again would make (and sign with) a new key

        await send_one(2)
        await send_one(3)
        assert rt.registry.managed() is channel
        assert len(srv.received) == 3
        published = {f"{first.record_name}.".encode(): first.txt_record_value().encode()}
        for rec in srv.received:
            assert dkim.verify(rec.data, dnsfunc=lambda name, timeout=5: published.get(name))
        assert not key_file.exists()  # nothing read or wrote the key file again
    finally:
        await rt.aclose()
