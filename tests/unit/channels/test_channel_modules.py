"""Each channel module owns its provider limits; the registry is a table of modules."""

from __future__ import annotations

from datetime import UTC, datetime

from postway.channels.gmail import quota_resets_at
from postway.channels.registry import MODULES
from postway.domain.states import ChannelName
from postway.domain.throttle import Limits


def test_microsoft_365_limits_apply_to_its_relays_only() -> None:
    smtp = MODULES[ChannelName.SMTP]
    assert smtp.limits(relay_host="smtp.office365.com") == Limits(daily_cap=10_000, per_minute=30)
    assert smtp.limits(relay_host="mail.company.example") == Limits()


def test_gmail_accounts_default_to_2000_a_day() -> None:
    gmail = MODULES[ChannelName.GMAIL]
    assert gmail.limits().daily_cap == 2000
    assert Limits(daily_cap=500).tightened(gmail.limits()).daily_cap == 500
    assert gmail.account_provider == "google"


def test_every_channel_has_a_module() -> None:
    assert set(MODULES) == set(ChannelName)
    assert MODULES[ChannelName.MANAGED].limits() == Limits()


def test_daily_quota_resets_at_midnight_pacific() -> None:
    # 2026-03-01 09:00 UTC is 01:00 PST: the next midnight is 2026-03-02 08:00 UTC
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert quota_resets_at(now) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert (quota_resets_at(now, 120.0) - now).total_seconds() == 120.0
