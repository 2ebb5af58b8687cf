"""Raw messages are loaded lazily: a claimed batch is read without them, each message's raw is
read when it is sent, and the raws held at once stay within `worker_batch_bytes`.

Observed without timing: every SQL statement that selects `messages.raw` is counted (how many
raws it asks for), and at each one the raws asked for so far minus the messages the relay has
already received bounds the raws the worker holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import make_settings
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from peers.tls import TLSPeer
from postway.delivery.submit import SendRequest, submit_message
from postway.domain.states import ChannelName
from postway.runtime import Runtime
from postway.store.channel_settings import save_setting
from postway.store.identities import create_identity
from postway.store.models import Delivery
from postway.store.users import create_user, principal_of

MESSAGES = 6
BODY = ("x" * 70 + "\n") * 4000  # about 284 KB per message
BUDGET = 700_000  # two of them fit, three do not


@pytest.fixture
async def rt(tmp_path: Path, database_url: str, tls_peer: TLSPeer) -> AsyncIterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url, tls_peer, worker_batch_bytes=BUDGET))
    await runtime.start()
    yield runtime
    await runtime.aclose()


async def queue_large(rt: Runtime, relay_port: int) -> list[int]:
    async with rt.db.session() as s, s.begin():
        who = principal_of(await create_user(s, "big@acme.example", "password123"))
        ident = await create_identity(s, who, name="B", email="big@acme.example", channel="smtp")
        relay = {"host": "127.0.0.1", "port": relay_port, "security": "none", "username": None,
                 "password": None, "keep_password": False, "auth": "auto"}  # fmt: skip
        await save_setting(s, rt.box, who.org_id, who.user_id, ChannelName.SMTP, relay)
    sizes = []
    for i in range(MESSAGES):
        async with rt.db.session() as s, s.begin():
            m, _ = await submit_message(
                s, rt.settings, who,
                SendRequest(identity_id=ident.id, to=[f"r{i}@client.example"], text=BODY),
            )  # fmt: skip
            sizes.append(m.size)
    return sizes


async def test_batch_holds_raws_lazily_within_its_byte_bound(rt, smtp_server):
    srv = await smtp_server()
    sizes = await queue_large(rt, srv.port)
    assert 2 * max(sizes) <= BUDGET < 3 * min(sizes)
    asked = 0
    held_at_load: list[int] = []

    def on_statement(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        nonlocal asked
        if statement.lstrip().upper().startswith("SELECT") and "messages.raw" in statement:
            asked += len(params)  # one bound id per raw asked for
            held_at_load.append(asked - len(srv.transactions))

    event.listen(Engine, "before_cursor_execute", on_statement)
    try:
        assert await rt.worker.run_once() == MESSAGES  # one batch
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)
    async with rt.db.session() as s:
        sent = await s.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.state == "sent")
        )
    assert sent == MESSAGES and len(srv.received) == MESSAGES
    assert asked == MESSAGES  # each raw read once, when its message was about to be sent
    assert max(held_at_load) <= 2, held_at_load
    assert rt.worker.pipeline.raw_bytes.held == 0
