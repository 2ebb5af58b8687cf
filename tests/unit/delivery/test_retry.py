from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from postway.delivery.retry import RetryPolicy, next_attempt

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_default_schedule_doubles_from_five_minutes_to_four_hours():
    p = RetryPolicy(jitter=0.0)
    assert [p.delay(n) for n in range(1, 9)] == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_jitter_stays_within_ten_percent(attempts, seed):
    p = RetryPolicy()
    plain = RetryPolicy(jitter=0.0).delay(attempts)
    d = p.delay(attempts, random.Random(seed))
    assert plain * 0.9 <= d <= plain * 1.1


def test_last_try_lands_on_expiry_then_gives_up():
    p = RetryPolicy(base_seconds=60, jitter=0.0)
    expires = NOW + timedelta(seconds=90)
    assert next_attempt(p, 1, NOW, expires) == NOW + timedelta(seconds=60)
    assert next_attempt(p, 2, NOW + timedelta(seconds=60), expires) == expires
    assert next_attempt(p, 3, expires, expires) is None


def test_server_requested_wait_is_honoured_when_longer():
    p = RetryPolicy(base_seconds=60, jitter=0.0)
    expires = NOW + timedelta(days=5)
    assert next_attempt(p, 1, NOW, expires, requested_wait=600) == NOW + timedelta(seconds=600)
    assert next_attempt(p, 1, NOW, expires, requested_wait=5) == NOW + timedelta(seconds=60)
