"""Restart correctness (issue 12 item 5): `postway serve` stopped mid-stream and started
again on the same data folder and database while 10,000 messages wait, some mid-backoff.

The run is bench/restart.py's (the same code prints the reliability row): messages accepted
through the batch API to a real SMTP peer of its own process that logs every RCPT and every
message it takes by Message-ID; 20 % are answered 451 at the first try (so they wait out the
first retry delay across the restart), 10 % always (deferred throughout), the rest go at once.
Each test checks: nothing lost, nothing sent twice (with SIGKILL only the copies of mail the
peer took while its delivery was still leased by the killed worker), nothing tried before the
next attempt time recorded at the stop, and the next attempt times of waiting deliveries the
same after the restart. A graceful stop leaves no delivery leased.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from peers.postgres import skip_requested

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import restart  # noqa: E402

MESSAGES = 10_000


def _database(name: str) -> str:
    if name == "postgres" and skip_requested():
        pytest.skip("POSTWAY_TEST_SKIP_POSTGRES=1")
    return name


def _check(r: restart.Result) -> None:
    assert r.problems == [], "\n".join(r.problems)
    assert r.messages == MESSAGES and r.non_202 == 0
    assert r.lost == 0 and r.early == 0 and r.changed == 0 and r.leased_after_stop == 0
    assert r.duplicated == r.allowed_duplicates
    stop = r.stops[0]
    # the scenario happened: mail still queued at the stop, some of it mid-backoff with its
    # retry still ahead when the new server ran, and retry times compared across the restart
    at_stop = stop.before
    assert at_stop.count(lambda d: d.state == "queued") > 0
    assert r.mid_backoff > 0
    assert r.kept > 0


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("database", DATABASES)
def test_graceful_restart_keeps_retry_times_and_sends_each_message_once(database: str) -> None:
    r = restart.run(_database(database), MESSAGES, mode="term", settle_timeout=300, log=True)
    _check(r)
    assert r.duplicated == 0


# PostgreSQL, where two workers' leases meet (bench/restart.py --mode kill runs both).
@pytest.mark.timeout(600)
@pytest.mark.parametrize("database", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_crash_restart_reclaims_leases_without_early_or_extra_sends(database: str) -> None:
    r = restart.run(
        _database(database), MESSAGES, mode="kill", lease=15.0, settle_timeout=300, log=True
    )
    _check(r)
