"""Reused MX sessions: RSET goes in one write with the next MAIL when the server offers
PIPELINING, and a session that fails that RSET is replaced without losing or doubling mail."""

from __future__ import annotations

from mta_support import message

from postway.domain.states import DeliveryState


def _mx(dns_peer) -> None:
    dns_peer.mx("example.org", (10, "mx.example.org"))
    dns_peer.a("mx.example.org", "127.0.0.1")


async def test_rset_is_pipelined_with_the_next_mail(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server()
    ch = managed(port=srv.port, max_connections=1)
    for i in range(3):
        (out,) = await ch.deliver(message(f"r{i}@example.org"))
        assert out.state is DeliveryState.DELIVERED
    assert srv.sessions_opened == 1 and len(srv.received) == 3
    cmds = srv.commands_of(1)
    verbs = [c.verb for c in cmds]
    assert verbs.count("RSET") == 2
    for i, c in enumerate(cmds):
        if c.verb == "RSET":
            # MAIL was already in the server's buffer when it read RSET: no round trip between
            follower = cmds[i + 1]
            assert follower.verb == "MAIL" and follower.pipelined


async def test_rset_keeps_its_round_trip_without_pipelining(dns_peer, smtp_server, managed):
    _mx(dns_peer)
    srv = await smtp_server(omit_extensions=["PIPELINING"])
    ch = managed(port=srv.port, max_connections=1)
    for i in range(2):
        (out,) = await ch.deliver(message(f"r{i}@example.org"))
        assert out.state is DeliveryState.DELIVERED
    assert srv.verbs().count("RSET") == 1
    assert not any(c.pipelined for c in srv.commands)


async def test_session_dropped_at_rset_is_replaced_and_nothing_doubled(
    dns_peer, smtp_server, managed
):
    _mx(dns_peer)
    srv = await smtp_server()
    ch = managed(port=srv.port, max_connections=1)
    (first,) = await ch.deliver(message("a@example.org"))
    assert first.state is DeliveryState.DELIVERED
    srv.disconnect_at = "rset"  # the server drops the idle session when it is reused
    (second,) = await ch.deliver(message("b@example.org"))
    assert second.state is DeliveryState.DELIVERED
    assert [t.rcpt_tos for t in srv.transactions] == [["a@example.org"], ["b@example.org"]]
    assert [t.session_id for t in srv.received] == [1, 2]
    assert ch.pool.sessions_opened == 2
