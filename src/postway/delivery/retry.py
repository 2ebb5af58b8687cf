"""When a deferred delivery is tried again, and when it gives up (Postfix-style lifetime)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 300.0
    max_seconds: float = 4 * 3600.0
    jitter: float = 0.1  # +-10 %, so deferred mail to one host does not return in lock-step

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay after the `attempts`-th failed try: base, doubling, capped at max, jittered."""
        exp = min(max(attempts - 1, 0), 32)
        raw = min(self.base_seconds * (2**exp), self.max_seconds)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(raw * (1 + spread), 0.0)


def next_attempt(
    policy: RetryPolicy,
    attempts: int,
    now: datetime,
    expires_at: datetime,
    requested_wait: float | None = None,
) -> datetime | None:
    """The time of the next try, or None when the queue lifetime is over.

    A wait the server asked for is honoured when it is longer than our own schedule. The last
    try is placed at the expiry time itself, so a short lifetime still gets a final attempt.
    """
    if now >= expires_at:
        return None
    wait = policy.delay(attempts)
    if requested_wait is not None:
        wait = max(wait, requested_wait)
    return min(now + timedelta(seconds=wait), expires_at)
