"""Kill chaos, short: the harness of bench/chaos.py (the same code) with 5 SIGKILLs of the web
process and the workers of a real `postway serve`, under continuous posting through the HTTP
API, on SQLite and PostgreSQL, for the managed channel (SMTP sink on loopback) and the Gmail
channel (the Google stand-in). Every message acknowledged with a 202 must arrive; a
duplicate is allowed only for mail its recipient had taken when a worker was killed, before
the result was committed (the outcome-unknown-after-the-final-dot case)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from peers.postgres import skip_requested

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chaos import run_chaos  # noqa: E402

KILLS = 5


# A web process restart imports the whole app: seconds each on a loaded machine (10 s with
# the load average at 12), so the run may take longer than the suite's 120 s default.
# Both databases and both channels, in two runs (the four pairs are bench/chaos.py's, and
# each run costs a minute or two of the suite).
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("database", "channel"),
    [("sqlite", "managed"), pytest.param("postgres", "gmail", marks=pytest.mark.postgres)],
)
def test_kill_chaos_loses_nothing_acknowledged(database: str, channel: str, tmp_path: Path):
    if database == "postgres" and skip_requested():
        pytest.skip("POSTWAY_TEST_SKIP_POSTGRES=1")
    r = run_chaos(database, channel, KILLS, tmp=tmp_path, settle_seconds=45)
    print(r.summary())
    assert len(r.kills) == KILLS
    assert r.web_kills >= 2 and r.worker_kills >= 2
    assert r.supervisor_alive
    assert len(r.accepted) > 20  # mail kept flowing between the kills
    assert r.lost == [], r.summary()
    assert r.failed == []
    assert r.pending_at_end == 0
    assert r.unexplained_duplicates == [], r.summary()
    assert r.statuses.keys() <= {202, 503}, r.statuses  # never a 500 or a refusal
