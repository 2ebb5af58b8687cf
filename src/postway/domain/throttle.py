"""Per-mailbox sending limits: batches with a wait between them, per-minute and daily caps.

Pure arithmetic on a window state; the store persists the state and the pipeline asks `admit`
how many recipients may go now. Mail over a limit waits for the next window; it is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)

# Providers' published limits live in their channel modules (channels/*.py `MODULE.limits`);
# an admin's own limits can only make them stricter (`Limits.tightened`).

@dataclass(frozen=True, slots=True)
class Limits:
    batch_size: int | None = None
    wait_seconds: float = 0.0
    daily_cap: int | None = None
    per_minute: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.batch_size or self.daily_cap or self.per_minute)

    def tightened(self, other: Limits) -> Limits:
        """The stricter of two sets of limits, field by field."""

        def low(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return Limits(
            batch_size=low(self.batch_size, other.batch_size),
            wait_seconds=max(self.wait_seconds, other.wait_seconds),
            daily_cap=low(self.daily_cap, other.daily_cap),
            per_minute=low(self.per_minute, other.per_minute),
        )


# Channel names an organisation's settings may give limits for (domain.states.ChannelName).
CHANNELS = ("managed", "smtp", "gmail")


def limits_for(data: dict[str, object] | None, channel: str) -> Limits:
    """The organisation's limits for one channel's mailboxes: the channel's own set when the
    admin gave one (`{"channels": {"smtp": {...}}}`), else the organisation-wide set."""
    own = ((data or {}).get("channels") or {}).get(channel)  # type: ignore[attr-defined]
    if own:
        return parse_limits(own)
    return parse_limits({k: v for k, v in (data or {}).items() if k != "channels"})


def parse_limits(data: dict[str, object] | None) -> Limits:
    """Limits from an admin's settings (the organisation-wide set; a `channels` object of
    per-channel sets is checked too, see `limits_for`); raises ValueError naming the bad
    field."""
    data = data or {}
    known = {"batch_size", "wait_seconds", "daily_cap", "per_minute"}
    channels = data.get("channels")
    if channels is not None:
        if not isinstance(channels, dict):
            raise ValueError("channels: an object of limits per channel")
        for name, own in channels.items():
            if name not in CHANNELS:
                raise ValueError(f"channels: '{name}' is not one of {', '.join(CHANNELS)}")
            if own is not None and not isinstance(own, dict):
                raise ValueError(f"channels.{name}: an object of limits")
            try:
                parse_limits({k: v for k, v in (own or {}).items() if k != "channels"})
            except ValueError as exc:
                raise ValueError(f"channels.{name}.{exc}") from None
        data = {k: v for k, v in data.items() if k != "channels"}
    for key in data:
        if key not in known:
            raise ValueError(f"{key}: unknown setting (use {', '.join(sorted(known))})")

    def count(key: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}: a whole number of at least 1")
        return value

    wait = data.get("wait_seconds", 0) or 0
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 86400:
        raise ValueError("wait_seconds: a number of seconds from 0 to 86400")
    return Limits(count("batch_size"), float(wait), count("daily_cap"), count("per_minute"))


@dataclass(slots=True)
class Window:
    """What one mailbox has used; persisted between calls."""

    day_start: datetime | None = None
    day_count: int = 0
    minute_start: datetime | None = None
    minute_count: int = 0
    batch_count: int = 0
    paused_until: datetime | None = None


def admit(limits: Limits, w: Window, wanted: int, now: datetime) -> tuple[int, datetime | None]:
    """Admit up to `wanted` sends at `now`, updating `w`.

    Returns (admitted, retry_at): retry_at is when the rest may try again, None when all were
    admitted. Invariants: counts never exceed the limits within a window; a full batch starts
    a pause of `wait_seconds` before the next send.
    """
    if wanted <= 0:
        return 0, None
    if w.paused_until is not None:
        if now < w.paused_until:
            return 0, w.paused_until
        w.paused_until = None
        w.batch_count = 0
    if w.day_start is None or now - w.day_start >= DAY:
        w.day_start, w.day_count = now, 0
    if w.minute_start is None or now - w.minute_start >= MINUTE:
        w.minute_start, w.minute_count = now, 0

    allowed = wanted
    if limits.daily_cap is not None:
        allowed = min(allowed, limits.daily_cap - w.day_count)
    if limits.per_minute is not None:
        allowed = min(allowed, limits.per_minute - w.minute_count)
    if limits.batch_size is not None:
        allowed = min(allowed, limits.batch_size - w.batch_count)
    allowed = max(allowed, 0)
    w.day_count += allowed
    w.minute_count += allowed
    w.batch_count += allowed

    waits: list[datetime] = []
    if limits.daily_cap is not None and w.day_count >= limits.daily_cap:
        waits.append(w.day_start + DAY)
    if limits.per_minute is not None and w.minute_count >= limits.per_minute:
        waits.append(w.minute_start + MINUTE)
    if limits.batch_size is not None and w.batch_count >= limits.batch_size:
        w.paused_until = now + timedelta(seconds=limits.wait_seconds)
        waits.append(w.paused_until)
    if allowed == wanted:
        return allowed, None
    return allowed, max(waits) if waits else now
