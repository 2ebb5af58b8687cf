from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from postway.domain.throttle import Limits, Window, admit, parse_limits

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_batches_of_25_then_wait_45_seconds():
    limits = Limits(batch_size=25, wait_seconds=45)
    w = Window()
    assert admit(limits, w, 40, T0) == (25, T0 + timedelta(seconds=45))
    assert admit(limits, w, 15, T0 + timedelta(seconds=10)) == (0, T0 + timedelta(seconds=45))
    assert admit(limits, w, 15, T0 + timedelta(seconds=45)) == (15, None)


def test_daily_cap_waits_for_next_day_and_nothing_is_dropped():
    limits = Limits(daily_cap=2000)
    w = Window()
    assert admit(limits, w, 1999, T0) == (1999, None)
    assert admit(limits, w, 5, T0 + timedelta(hours=3)) == (1, T0 + timedelta(days=1))
    assert admit(limits, w, 4, T0 + timedelta(days=1)) == (4, None)


def test_parse_limits_rejects_nonsense():
    assert parse_limits({"batch_size": 25, "wait_seconds": 45}) == Limits(25, 45.0)
    for bad in ({"batch_size": 0}, {"daily_cap": "many"}, {"wait_seconds": -1}, {"speed": 1}):
        try:
            parse_limits(bad)
        except ValueError as exc:
            assert str(exc)
        else:
            raise AssertionError(bad)


@given(
    batch=st.one_of(st.none(), st.integers(1, 50)),
    cap=st.one_of(st.none(), st.integers(1, 200)),
    per_min=st.one_of(st.none(), st.integers(1, 40)),
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 90)), max_size=60),
)
def test_never_exceeds_any_limit(batch, cap, per_min, steps):
    limits = Limits(batch_size=batch, wait_seconds=30, daily_cap=cap, per_minute=per_min)
    w = Window()
    now = T0
    sent: list[tuple[datetime, int]] = []
    for wanted, advance in steps:
        now += timedelta(seconds=advance)
        n, retry_at = admit(limits, w, wanted, now)
        assert 0 <= n <= wanted
        assert (retry_at is None) == (n == wanted)
        if retry_at is not None:
            assert retry_at >= now
        # the window's own counters are the invariant: never above a limit
        assert cap is None or w.day_count <= cap
        assert per_min is None or w.minute_count <= per_min
        assert batch is None or w.batch_count <= batch
        sent.append((now, n))
    for t, _ in sent:
        in_day = sum(n for u, n in sent if t <= u < t + timedelta(days=1))
        in_min = sum(n for u, n in sent if t <= u < t + timedelta(minutes=1))
        if cap is not None:
            assert in_day <= 2 * cap  # two overlapping fixed windows at most
        if per_min is not None:
            assert in_min <= 2 * per_min
