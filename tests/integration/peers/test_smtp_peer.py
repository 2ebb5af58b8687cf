"""The scripted SMTP peer behaves as scripted (it is the ground truth for the MTA tests)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from peers.smtp import DISCONNECT, ScriptedSMTPServer

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello\r\n.dot line\r\n"


async def test_accepts_and_records(smtp_server):
    srv = await smtp_server(rcpt_replies={"x@example.org": "550 5.1.1 No such user"})
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False) as c:
        errors, reply = await c.sendmail("a@example.com", ["b@example.org", "x@example.org"], MSG)
    assert errors["x@example.org"].code == 550
    assert "queued as" in reply
    (rec,) = srv.received
    assert rec.mail_from == "a@example.com"
    assert rec.rcpt_tos == ["b@example.org"]
    assert rec.data == MSG
    assert not rec.tls
    assert srv.sessions_opened == 1
    assert srv.transactions_per_session == {1: 1}


async def test_starttls_required_and_auth(smtp_server, tls_peer):
    srv = await smtp_server(
        tls_context=tls_peer.server_context(),
        require_starttls=True,
        users={"u": "p"},
        require_auth=True,
    )
    async with aiosmtplib.SMTP(
        hostname="localhost", port=srv.port, tls_context=tls_peer.client_context()
    ) as c:
        await c.login("u", "p")
        await c.sendmail("a@example.com", ["b@example.org"], MSG)
    (rec,) = srv.received
    assert rec.tls and rec.auth_user == "u"


async def test_starttls_required_refuses_plain(smtp_server, tls_peer):
    srv = await smtp_server(tls_context=tls_peer.server_context(), require_starttls=True)
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await c.sendmail("a@example.com", ["b@example.org"], MSG)
    assert err.value.code == 530


async def test_implicit_tls(smtp_server, tls_peer):
    srv = await smtp_server(tls_context=tls_peer.server_context(), implicit_tls=True)
    async with aiosmtplib.SMTP(
        hostname="localhost", port=srv.port, use_tls=True, tls_context=tls_peer.client_context()
    ) as c:
        await c.sendmail("a@example.com", ["b@example.org"], MSG)
    assert srv.received[0].tls


async def test_omitted_extensions(smtp_server):
    srv = await smtp_server(omit_extensions=["SMTPUTF8", "8BITMIME", "PIPELINING"])
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False) as c:
        await c.ehlo()
        assert not c.supports_extension("smtputf8")
        assert not c.supports_extension("8bitmime")
        assert not c.supports_extension("pipelining")
        assert c.supports_extension("size")


async def _raw(srv: ScriptedSMTPServer, payload: bytes, replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    lines = [await reader.readline()]
    writer.write(b"EHLO client.test\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    writer.write(payload)
    for _ in range(replies):
        lines.append(await reader.readline())
    writer.close()
    return lines


async def test_sees_pipelined_commands(smtp_server):
    srv = await smtp_server()
    lines = await _raw(srv, b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n", 3)
    assert lines[-1].startswith(b"354")
    flags = {c.verb: c.pipelined for c in srv.commands}
    assert flags == {"EHLO": False, "MAIL": False, "RCPT": True, "DATA": True}


async def test_disconnect_at_rcpt_gives_no_reply(smtp_server):
    srv = await smtp_server(rcpt_replies={"b@example.org": DISCONNECT})
    lines = await _raw(srv, b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n", 2)
    assert lines[1].startswith(b"250") and lines[2] == b""


@pytest.mark.parametrize("phase", ["data", "dot"])
async def test_disconnect_in_data(smtp_server, phase):
    srv = await smtp_server(disconnect_at=phase)
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await c.sendmail("a@example.com", ["b@example.org"], MSG)
    assert srv.received == []
    assert len(srv.transactions) == (1 if phase == "dot" else 0)


async def test_stall_then_client_timeout(smtp_server):
    srv = await smtp_server(stall={"rcpt": 30})
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False, timeout=0.3) as c:
        await c.mail("a@example.com")
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await c.rcpt("b@example.org")
    # stop() ends the stall at once: teardown does not wait 30 s.


async def test_greeting_refusal_and_data_callable(smtp_server):
    busy = await smtp_server(greeting="421 4.3.2 busy")
    with pytest.raises(aiosmtplib.SMTPConnectResponseError):
        async with aiosmtplib.SMTP(hostname=busy.host, port=busy.port, start_tls=False):
            pass
    seen = []

    def answer(rec):
        seen.append(rec.rcpt_tos)
        return "451 4.3.0 try again in 60 seconds" if len(seen) == 1 else "250 2.0.0 ok"

    srv = await smtp_server(data_reply=answer)
    async with aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPDataError):
            await c.sendmail("a@example.com", ["b@example.org"], MSG)
        await c.rset()
        await c.sendmail("a@example.com", ["b@example.org"], MSG)
    assert len(srv.transactions) == 2 and len(srv.received) == 1
    assert srv.transactions_per_session == {1: 2}


def test_sync_use_and_session_counts(tls_peer):
    import smtplib

    with ScriptedSMTPServer(tls_context=tls_peer.server_context()) as srv:
        for _ in range(2):
            with smtplib.SMTP(srv.host, srv.port) as c:
                c.starttls(context=tls_peer.client_context())
                c.sendmail("a@example.com", ["b@example.org"], MSG)
        assert srv.sessions_opened == 2
        assert all(r.tls for r in srv.received)
