"""The lockout policy after failed logins: none below the limit, then doubling to a ceiling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postway.domain.lockout import LockPolicy, lock_for, still_counted

POLICY = LockPolicy(max_failures=5, lock_seconds=30, lock_max_seconds=3600, window_seconds=86400)


def test_no_lock_below_the_limit_then_doubling_to_the_ceiling():
    locks = [lock_for(POLICY, n) for n in range(1, 14)]
    seconds = [lock.total_seconds() if lock else 0 for lock in locks]
    assert seconds == [0, 0, 0, 0, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_huge_count_stays_at_the_ceiling():
    assert lock_for(POLICY, 10**9) == timedelta(hours=1)


def test_failures_are_forgotten_after_the_window():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert still_counted(POLICY, now - timedelta(hours=23), now)
    assert not still_counted(POLICY, now - timedelta(hours=25), now)
