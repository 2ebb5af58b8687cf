"""The intake's SMTP edge: never an open relay, limits, durability, and failures kept for review."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiosmtplib
import pytest
from bounce_support import build_dsn, seed_delivered, send
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from postway.bounces.apply import reprocess_failed, store_bounce
from postway.bounces.intake import BounceIntake
from postway.mta.verp import make_return_path
from postway.store.models import BounceMessage

SECRET = "test-secret-key-for-postway-tests-0123456789"  # make_settings' key


async def stored(env) -> list[BounceMessage]:
    async with env.rt.db.session() as s:
        return list(
            await s.scalars(select(BounceMessage).options(selectinload(BounceMessage.body)))
        )


async def rcpt_reply(port: int, address: str) -> tuple[int, str]:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
        await smtp.mail("")
        reply = await smtp.execute_command(b"RCPT", f"TO:<{address}>".encode())
        return reply.code, reply.message


async def test_refuses_foreign_domains_forged_and_unknown_addresses(env, intake):
    did = "3f2a" * 8
    good = make_return_path(did, SECRET, "bounces.postway.test")
    local, _, domain = good.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"  # one MAC letter off
    other_key = make_return_path(did, "some-other-secret", "bounces.postway.test")
    right_token_wrong_domain = make_return_path(did, SECRET, "example.org")
    for address in ("victim@example.org", right_token_wrong_domain):
        code, text = await rcpt_reply(intake.port, address)
        assert code == 550 and text.startswith("5.7.1"), (address, text)
    for address in (
        forged,
        other_key,
        "postmaster@bounces.postway.test",
        "b+zzz@bounces.postway.test",
    ):
        code, text = await rcpt_reply(intake.port, address)
        assert code == 550 and text.startswith("5.1.1"), (address, text)
    # a whole relay attempt fails at RCPT, before any content is read
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(intake.port, "victim@example.org", b"Subject: relay me\r\n\r\nhi\r\n")
    assert await stored(env) == []
    # the genuine address (letter case does not matter) is accepted
    assert (await rcpt_reply(intake.port, good.upper()))[0] == 250


async def test_message_size_is_advertised_and_enforced(env, intake):
    env.rt.settings.bounce_max_bytes = 20_000
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "big@client.example")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
        await smtp.ehlo()
        assert smtp.esmtp_extensions["size"] == "20000"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
            await smtp.mail("", options=["SIZE=50000"])
        assert declared.value.code == 552
    big = build_dsn(seeded) + (b"y" * 900 + b"\r\n") * 40
    with pytest.raises(aiosmtplib.SMTPSenderRefused):  # the client declares SIZE itself
        await send(intake.port, seeded.verp, big)
    long_line = build_dsn(seeded) + b"z" * 5000 + b"\r\n"
    for content, code in ((big, 552), (long_line, 500)):
        # a client that declares no size, or sends lines past RFC 5321's 1000 octets
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
            await smtp.mail("")
            await smtp.rcpt(seeded.verp)
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await smtp.data(content)
            assert refused.value.code == code
    assert await stored(env) == []


async def test_connections_and_recipients_are_limited(env, intake):
    env.rt.settings.bounce_max_connections = 2
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "many@client.example")
    held = [aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) for _ in range(2)]
    for c in held:
        await c.connect()
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as busy:
        await aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10).connect()
    assert busy.value.code == 421
    for c in held:
        await c.quit()
    await asyncio.sleep(0.1)  # the server notices the hang-ups
    tokens = [make_return_path(f"{i:032x}", SECRET, "bounces.postway.test") for i in range(21)]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port, timeout=10) as smtp:
        await smtp.mail("")
        codes = [(await smtp.rcpt(t))[0] for t in [seeded.verp, seeded.verp, *tokens[:19]]]
        assert codes == [250] * 21  # the repeated address counts once
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as many:
            await smtp.rcpt(tokens[19])
        assert many.value.code == 452


async def test_stored_before_250_and_recovered_after_a_crash(env):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "late@client.example")
    # The intake died after committing a message and before processing it.
    (bounce_id,) = await store_bounce(
        env.rt.db, mail_from="", rcpt_tos=[seeded.verp], peer="192.0.2.1", raw=build_dsn(seeded)
    )
    intake = BounceIntake(env.rt.db, env.rt.settings)
    await intake.start("127.0.0.1", 0)
    try:
        await intake.drain()
        (row,) = await stored(env)
        assert (row.id, row.status, row.peer) == (bounce_id, "processed", "192.0.2.1")
        # Over SMTP: by the time the client has its 250, the row is committed.
        _, reply = await send(intake.port, seeded.verp, b"Subject: ping\r\n\r\nnot a bounce\r\n")
        new_id = reply.rsplit(" ", 1)[-1]
        async with env.rt.db.session() as s:
            assert await s.get(BounceMessage, new_id) is not None
    finally:
        await intake.stop()


def _cli(database_url: str, env, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    environ.update(
        POSTWAY_DATA_DIR=str(env.rt.settings.data_dir),
        POSTWAY_DATABASE_URL=database_url,
        POSTWAY_SECRET_KEY=SECRET,
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "postway", "bounce", "failures", *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


async def test_garbage_is_kept_and_listed_by_bounce_failures(env, intake, database_url):
    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "who@client.example")
    garbage = b"\x00\xff\xfe garbage \x80\x81 no headers at all\r\n" * 3
    _, reply = await send(intake.port, seeded.verp, garbage, sender="weird@sender.example")
    await intake.drain()
    (row,) = await stored(env)
    assert row.status == "failed" and row.raw.startswith(b"\x00\xff") and row.error
    assert row.id in reply

    r = await asyncio.to_thread(_cli, database_url, env)
    assert r.returncode == 0, r.stderr
    assert row.id in r.stdout and "failed" in r.stdout and "weird@sender.example" in r.stdout

    r = await asyncio.to_thread(_cli, database_url, env, "--retry")
    assert r.returncode == 0, r.stderr
    assert "reprocessed 1; 0 no longer need review" in r.stderr and row.id in r.stdout
    # still one row, still failed, and the delivery was never touched
    assert [x.status for x in await stored(env)] == ["failed"]
    assert await reprocess_failed(env.rt.db, env.rt.settings) != []
    async with env.rt.db.session() as s:
        from postway.store.models import Delivery

        assert (await s.get(Delivery, seeded.delivery_id)).state == "delivered"
