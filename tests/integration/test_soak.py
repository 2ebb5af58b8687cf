"""Sustained load with faults (issue 12 item 4), the short version of bench/soak.py and its
code: a real `postway serve` takes mail through the HTTP API at a steady rate for 60 s while
one destination answers 451 to every RCPT, one drops the connection after MAIL and one waits
a second before every reply (peers of their own process, routed with POSTWAY_TRANSPORT).
Queue lifetime 30 s, so mail to the faulty destinations ends too.

Checked: every message acknowledged with a 202 is in the database in a final state after the
run settles; mail to the good and the slow destinations delivered, each copy once, at its
peer; deferred and dropped mail failed; open file descriptors of the process tree at the end
of the load no more than during warm-up plus a margin; resident memory growing by at most a
bound over the second half. Timings (API p99, delivery latency) are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import make_settings

from peers.postgres import skip_requested
from peers.tls import TLSPeer
from postway.delivery.submit import SendRequest, submit_message
from postway.runtime import Runtime
from postway.store.identities import create_identity, mark_verified
from postway.store.users import create_user, principal_of

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402

FD_MARGIN = 40  # SMTP sessions (up to 10 a destination) and HTTP connections come and go
RSS_GROWTH_MB = 30.0  # over the second half of the load


def _database(name: str) -> str:
    if name == "postgres" and skip_requested():
        pytest.skip("POSTWAY_TEST_SKIP_POSTGRES=1")
    return name


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# SQLite, the default (bench/soak.py runs both databases for ten minutes).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("database", ["sqlite"])
def test_sixty_seconds_of_mail_with_faulty_destinations_all_ends_and_nothing_leaks(
    database: str, tmp_path: Path
) -> None:
    cfg = soak.SoakConfig(
        database=_database(database),
        seconds=60,
        rate=50,
        connections=16,
        defer_share=0.05,
        drop_share=0.05,
        slow_share=0.02,
        slow_delay=1.0,
        lifetime=30,
        retry_base=5,
        retry_max=15,
        sample_every=5,
        settle=300,
    )
    r = soak._run(soak.soak(cfg, tmp_path))
    print(soak.summary(r))
    for s in r.samples:
        print(soak.format_sample(s))

    kinds = {kind for _, kind in r.accepted.values()}
    assert kinds == {"good", "defer", "drop", "slow"}  # every destination got mail
    assert r.statuses == {"202": len(r.accepted)}, r.statuses
    assert len(r.accepted) >= 0.9 * cfg.seconds * 50

    # every acknowledged message stored and ended; none lost, none sent twice
    assert r.missing_in_db == 0
    assert r.not_final == 0
    assert r.lost == []
    assert r.duplicated == 0
    by_kind = {k: sum(1 for _, kind in r.accepted.values() if kind == k) for k in kinds}
    assert r.states[("good", "delivered")] == by_kind["good"]
    assert r.states[("slow", "delivered")] == by_kind["slow"]
    assert r.states[("defer", "failed")] == by_kind["defer"]
    assert r.states[("drop", "failed")] == by_kind["drop"]
    assert r.tracebacks == 0

    # flat: file descriptors and memory
    warm = [s for s in r.samples if s.t <= cfg.seconds / 2]
    late = [s for s in r.samples if s.t > cfg.seconds - 15]
    assert warm and late
    assert max(s.fds for s in late) <= max(s.fds for s in warm) + FD_MARGIN, [
        s.fds for s in r.samples
    ]
    half = min(r.samples, key=lambda s: abs(s.t - cfg.seconds / 2))
    growth = r.samples[-1].rss_mb - half.rss_mb
    assert growth <= RSS_GROWTH_MB, [round(s.rss_mb, 1) for s in r.samples]


async def test_a_stalled_destination_does_not_hold_up_mail_to_others(
    tmp_path: Path, database_url: str, tls_peer: TLSPeer, smtp_server
) -> None:
    """The fairness the soak measures, without timing: while one message waits on a server
    that takes 30 s to answer MAIL, mail to another server, accepted after it, is claimed and
    delivered (the worker does not wait for the whole earlier batch before claiming more)."""
    slow = await smtp_server(stall={"mail": 30})
    good = await smtp_server()
    rt = Runtime(
        make_settings(
            tmp_path, database_url, tls_peer,
            transport=f"slow.example=127.0.0.1:{slow.port},good.example=127.0.0.1:{good.port}",
            smtp_command_timeout=120.0,
        )
    )  # fmt: skip
    await rt.start()
    worker = asyncio.create_task(rt.worker.run())
    try:
        async with rt.db.session() as s, s.begin():
            who = principal_of(await create_user(s, "rep@acme.example", "password123"))
            ident = await create_identity(s, who, name="Rep", email="rep@acme.example")
            await mark_verified(s, "rep@acme.example")

        async def send(to: str) -> None:
            async with rt.db.session() as s, s.begin():
                await submit_message(
                    s, rt.settings, who, SendRequest(identity_id=ident.id, to=[to], text="x")
                )
            rt.worker.wake()

        async def until(check: Callable[[], bool], seconds: float = 60) -> bool:
            for _ in range(int(seconds * 10)):
                if check():
                    return True
                await asyncio.sleep(0.1)
            return check()

        await send("lead@slow.example")
        assert await until(lambda: "MAIL" in [v.upper() for v in slow.verbs()])
        for i in range(5):
            await send(f"lead{i}@good.example")
        assert await until(lambda: len(good.received) == 5)
        assert slow.received == []  # the good mail went while the slow server still stalled
        assert await until(lambda: len(slow.received) == 1, 90)
    finally:
        rt.worker.stop()
        await asyncio.wait_for(worker, 60)
        await rt.aclose()
