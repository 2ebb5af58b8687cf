"""The managed channel end to end: DNS peer -> route -> scripted MX -> Outcome."""

from __future__ import annotations

import dkim
import pytest
from mta_support import BOUNCE_DOMAIN, RAW, SECRET, dnsfunc_for, message, settings_for

from peers.smtp import DISCONNECT
from postway.domain.states import DeliveryState
from postway.mta.verp import parse_return_path


def _mx(dns_peer, domain="example.org", ip="127.0.0.1"):
    dns_peer.mx(domain, (10, f"mx.{domain}"))
    dns_peer.a(f"mx.{domain}", ip)


async def test_delivered_signed_verp_and_intact(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server()
    ch = managed(port=srv.port)
    msg = message("buyer@example.org")
    (out,) = await ch.deliver(msg)
    assert out.state is DeliveryState.DELIVERED
    assert out.reply_code == 250 and out.detail["queue_id"] == "TESTQ1"
    assert out.remote_mta == "mx.example.org"
    (rec,) = srv.received
    assert rec.rcpt_tos == ["buyer@example.org"]
    # The envelope sender is the signed VERP address of this recipient's delivery.
    assert parse_return_path(rec.mail_from, SECRET, BOUNCE_DOMAIN) == msg.recipients[0].delivery_id
    forged = rec.mail_from.replace(rec.mail_from[2], "0" if rec.mail_from[2] != "0" else "1", 1)
    assert parse_return_path(forged, SECRET, BOUNCE_DOMAIN) is None
    # Body and headers arrive byte for byte, after the signature header.
    assert rec.data.startswith(b"DKIM-Signature: ") and rec.data.endswith(RAW)
    # The published key verifies the signature (dkimpy asks the DNS peer).
    key = ch.signer.key
    dns_peer.txt(key.record_name, key.txt_record_value())
    assert dkim.verify(rec.data, dnsfunc=dnsfunc_for(dns_peer))


async def test_ed25519_signature_verifies(tmp_path, dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server()
    s = settings_for(tmp_path, dns_peer, dkim_algorithm="ed25519-sha256")
    ch = managed(port=srv.port, settings=s)
    (out,) = await ch.deliver(message("buyer@example.org"))
    assert out.state is DeliveryState.DELIVERED
    key = ch.signer.key
    assert "k=ed25519" in key.txt_record_value()
    dns_peer.txt(key.record_name, key.txt_record_value())
    assert dkim.verify(srv.received[0].data, dnsfunc=dnsfunc_for(dns_peer))


async def test_one_transaction_per_recipient(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server()
    msg = message("a@example.org", "b@example.org", "c@example.org")
    outs = await managed(port=srv.port).deliver(msg)
    assert {o.state for o in outs} == {DeliveryState.DELIVERED}
    senders = {r.rcpt_tos[0]: r.mail_from for r in srv.received}
    assert len(senders) == 3
    for r in msg.recipients:
        assert parse_return_path(senders[r.address], SECRET, BOUNCE_DOMAIN) == r.delivery_id


@pytest.mark.parametrize(
    ("where", "reply", "state", "reason", "hard", "wait"),
    [
        ("rcpt", "550 5.1.1 <x@example.org>: No such user", "bounced", "userunknown", True, None),
        ("rcpt", "452 4.2.2 Mailbox full", "deferred", "mailboxfull", False, None),
        ("rcpt", "421 4.7.0 Too many connections, try again in 5 minutes", "deferred", None,
         False, 300.0),
        ("data", "451 4.3.0 Temporary failure, try again in 60 seconds", "deferred", None,
         False, 60.0),
        ("data", "554 5.7.1 Message rejected as spam", "bounced", "spamdetected", False, None),
        ("mail", "550 5.7.1 Sender rejected", "bounced", "rejected", False, None),
    ],
)  # fmt: skip
async def test_reply_outcomes(dns_peer, smtp_server, managed, where, reply, state, reason, hard,
                              wait):  # fmt: skip
    _mx(dns_peer)
    script = {
        "rcpt": {"rcpt_replies": {"x@example.org": reply}},
        "data": {"data_reply": reply},
        "mail": {"mail_reply": reply},
    }[where]
    srv = await smtp_server(**script)
    (out,) = await managed(port=srv.port).deliver(message("x@example.org"))
    assert out.state == state
    assert out.reply_code == int(reply[:3])
    assert out.status == reply.split()[1]
    assert out.diagnostic == reply
    if reason:
        assert out.reason == reason
    assert out.hard is hard
    assert out.retry_after == wait
    assert out.detail["command"] == where.upper()


async def test_route_failures(dns_peer, managed):
    dns_peer.null_mx("nomail.example")
    dns_peer.servfail("broken.example")
    ch = managed()
    outs = await ch.deliver(message("a@nomail.example", "b@unknown.example", "c@broken.example"))
    by = {o.recipient.split("@")[1]: o for o in outs}
    assert by["nomail.example"].state is DeliveryState.BOUNCED
    assert (by["nomail.example"].reason, by["nomail.example"].hard) == ("notaccept", True)
    assert by["unknown.example"].state is DeliveryState.BOUNCED
    assert (by["unknown.example"].reason, by["unknown.example"].hard) == ("hostunknown", True)
    assert by["broken.example"].state is DeliveryState.DEFERRED
    assert by["broken.example"].hard is False


@pytest.mark.parametrize(("phase", "unknown"), [("data", False), ("dot", True)])
async def test_drop_in_data(dns_peer, smtp_server, managed, phase, unknown):
    _mx(dns_peer)
    srv = await smtp_server(disconnect_at=phase)
    # Big enough that the drop mid-DATA meets the client while it is still writing; a small
    # message would be all sent, and a silent close after it is rightly "outcome unknown".
    raw = RAW + (b"y" * 998 + b"\r\n") * 4000 if phase == "data" else RAW
    (out,) = await managed(port=srv.port).deliver(message("a@example.org", raw=raw))
    assert out.state is DeliveryState.DEFERRED
    assert (out.detail.get("outcome") == "unknown") is unknown


@pytest.mark.parametrize(("phase", "unknown"), [("rcpt", False), ("dot", True)])
async def test_stall_past_timeout(dns_peer, smtp_server, managed, phase, unknown):
    _mx(dns_peer)
    srv = await smtp_server(stall={phase: 30})
    (out,) = await managed(port=srv.port, timeout=0.3).deliver(message("a@example.org"))
    assert out.state is DeliveryState.DEFERRED
    assert "timed out" in out.diagnostic
    assert (out.detail.get("outcome") == "unknown") is unknown


async def test_drop_at_rcpt_then_next_message_reconnects(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server(rcpt_replies={"gone@example.org": DISCONNECT})
    ch = managed(port=srv.port)
    (first,) = await ch.deliver(message("gone@example.org"))
    (second,) = await ch.deliver(message("ok@example.org"))
    assert first.state is DeliveryState.DEFERRED and second.state is DeliveryState.DELIVERED
    assert srv.sessions_opened == 2


async def test_smtputf8_needed(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    plain = await smtp_server(omit_extensions=["SMTPUTF8"])
    (out,) = await managed(port=plain.port).deliver(message("jürgen@example.org"))
    assert out.state is DeliveryState.FAILED and "SMTPUTF8" in out.diagnostic
    assert plain.received == []
    utf8 = await smtp_server()
    (out,) = await managed(port=utf8.port).deliver(message("jürgen@example.org"))
    assert out.state is DeliveryState.DELIVERED
    assert "SMTPUTF8" in utf8.received[0].mail_options


async def test_8bit_body_needs_8bitmime(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    raw = RAW.replace(b"Hello,", "Grüße,".encode())
    srv = await smtp_server(omit_extensions=["8BITMIME"])
    (out,) = await managed(port=srv.port).deliver(message("a@example.org", raw=raw))
    assert out.state is DeliveryState.FAILED and "8BITMIME" in out.diagnostic
    ok = await smtp_server()
    (out,) = await managed(port=ok.port).deliver(message("a@example.org", raw=raw))
    assert out.state is DeliveryState.DELIVERED
    assert "BODY=8BITMIME" in ok.received[0].mail_options
    assert ok.received[0].data.endswith(raw)
