"""One client cannot hold the intake's slots: a per-address connection limit, a budget of
commands that carry no mail, and an overall session deadline, over real loopback sockets (all
of 127/8 is local on Linux, so 127.0.0.2 is a second client)."""

from __future__ import annotations

import asyncio
import contextlib

WAIT = 10.0  # generous bound on any single read; the tests assert replies, never durations


class Client:
    """A raw SMTP client from a chosen loopback address, to see the server's exact replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> tuple[Client, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        client = cls(reader, writer)
        return client, await client.line()

    async def line(self) -> str:
        return (await asyncio.wait_for(self.reader.readline(), WAIT)).decode().rstrip("\r\n")

    async def command(self, text: str) -> str:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.line()

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), WAIT) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def wait_until(check, rounds: int = 200) -> None:  # noqa: ANN001
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server never got there")


async def test_one_address_cannot_take_every_slot(env, intake):
    limit = env.rt.settings.bounce_max_connections_per_peer
    assert limit == 10 < env.rt.settings.bounce_max_connections  # the defaults
    held = []
    for _ in range(limit):
        client, greeting = await Client.connect(intake.port)
        assert greeting.startswith("220 ")
        held.append(client)

    extra, greeting = await Client.connect(intake.port)
    assert greeting.startswith("421 4.7.0") and await extra.closed_by_server()
    await extra.close()
    other, greeting = await Client.connect(intake.port, source="127.0.0.2")
    assert greeting.startswith("220 ")
    assert (await other.command("NOOP")).startswith("250")

    # A slot given back can be taken again; refused connections leave nothing counted.
    await held.pop().close()
    await wait_until(lambda: intake.per_peer["127.0.0.1"] == limit - 1)
    again, greeting = await Client.connect(intake.port)
    assert greeting.startswith("220 ")
    for c in [*held, other, again]:
        await c.close()
    await wait_until(lambda: not intake.per_peer and intake.active == 0)


async def test_noop_and_rset_flood_gets_421_and_the_line_closed(env, intake):
    budget = env.rt.settings.bounce_max_idle_commands
    assert budget == 20
    client, _ = await Client.connect(intake.port)
    assert (await client.command("EHLO flood.example")).startswith("250")
    while (await client.line()).startswith("250-"):
        pass  # the rest of the EHLO reply
    for i in range(budget - 1):
        assert (await client.command("NOOP" if i % 2 else "RSET")).startswith("250"), i
    assert (await client.command("NOOP")).startswith("421 4.7.0")
    assert await client.closed_by_server()
    await client.close()


async def test_mail_refills_the_idle_command_budget(env, intake):
    from bounce_support import seed_delivered

    rep = await env.account("rep@acme.example")
    seeded = await seed_delivered(env, rep.email, "busy@client.example")
    env.rt.settings.bounce_max_idle_commands = 4
    client, _ = await Client.connect(intake.port)
    assert (await client.command("HELO mta.client.example")).startswith("250")
    for _ in range(3):  # a sender between messages: a few RSETs and NOOPs, then mail
        for cmd in ("RSET", "NOOP", "NOOP"):
            assert (await client.command(cmd)).startswith("250")
        assert (await client.command("MAIL FROM:<>")).startswith("250")
        assert (await client.command(f"RCPT TO:<{seeded.verp}>")).startswith("250")
        assert (await client.command("DATA")).startswith("354")
        assert (await client.command("Subject: x\r\n\r\nnot a bounce\r\n.")).startswith("250")
    for _ in range(4):  # the budget is whole again after the last message
        assert (await client.command("NOOP")).startswith("250")
    assert (await client.command("NOOP")).startswith("421")
    await client.close()
    await intake.drain()


async def test_a_session_past_its_deadline_is_closed(env, intake):
    env.rt.settings.bounce_session_seconds = 1.0
    env.rt.settings.bounce_max_idle_commands = 1_000_000  # only the deadline may end it
    client, _ = await Client.connect(intake.port)

    async def keep_talking() -> list[str]:
        replies: list[str] = []
        while True:  # each NOOP resets the idle timeout; the deadline does not move
            client.writer.write(b"NOOP\r\n")
            line = (await client.reader.readline()).decode().rstrip("\r\n")
            if not line:
                return replies
            replies.append(line)
            await asyncio.sleep(0.05)

    replies = await asyncio.wait_for(keep_talking(), 60)
    assert replies[-1].startswith("421 4.4.2") and set(replies[:-1]) <= {"250 OK"}
    await client.close()
