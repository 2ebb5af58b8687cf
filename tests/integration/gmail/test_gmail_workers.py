"""Two real `postway worker` processes sending through one Gmail account whose access token
has expired: exactly one token refresh reaches Google, and every message goes out once."""

from __future__ import annotations

import asyncio

from gmail_support import gmail_sender, send
from sqlalchemy import func, select, update
from test_workers import start_worker, stop, worker_env

from peers.google import ACCOUNT
from postway.store.models import ConnectedAccount, Delivery, utcnow


async def _sent(env) -> int:
    async with env.rt.db.session() as s:
        return await s.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.state == "sent")
        )


async def test_two_worker_processes_refresh_the_token_once(genv, google, tmp_path):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    google.state.expire_access_tokens(ACCOUNT)
    async with genv.rt.db.session() as s, s.begin():
        await s.execute(update(ConnectedAccount).values(token_expires_at=utcnow()))
    ids = [await send(acct, identity, to=[f"lead{i}@client.example"]) for i in range(8)]
    before = len(google.state.requests_to("/token"))
    wenv = worker_env(
        genv,
        tmp_path,
        9,  # no SMTP here: the managed channel is not used
        POSTWAY_WORKER_BATCH="1",  # each claims one message at a time: both work at once
        POSTWAY_GOOGLE_BASE_URL=google.base_url,
        POSTWAY_GOOGLE_CLIENT_ID=google.client_id,
        POSTWAY_GOOGLE_CLIENT_SECRET=google.client_secret,
    )
    workers = [start_worker(wenv), start_worker(wenv)]
    try:
        for _ in range(300):
            if await _sent(genv) == len(ids):
                break
            await asyncio.sleep(0.1)
    finally:
        stop(*workers)
    assert await _sent(genv) == len(ids)
    refreshes = [
        r for r in google.state.requests_to("/token")[before:]
        if r.form().get("grant_type") == "refresh_token"
    ]  # fmt: skip
    assert len(refreshes) == 1
    for i in range(len(ids)):
        assert len(google.state.received_by(f"lead{i}@client.example")) == 1
    senders = {r.bearer for r in google.state.requests_to("/messages/send")}
    assert len(senders) == 1  # both processes used the one refreshed token
