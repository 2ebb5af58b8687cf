"""Lockout after failed logins: how long a counter's lock lasts (pure; the store keeps the
counters)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class LockPolicy:
    max_failures: int  # failures allowed before the first lock
    lock_seconds: float  # the first lock; each further failure doubles it
    lock_max_seconds: float
    window_seconds: float  # a counter idle (and unlocked) this long starts again from zero


def lock_for(policy: LockPolicy, failures: int) -> timedelta | None:
    """The lock earned by reaching `failures` failed attempts: none below the limit, then
    `lock_seconds` doubling with every further failure, never past `lock_max_seconds`."""
    if failures < policy.max_failures:
        return None
    doublings = min(failures - policy.max_failures, 40)  # 2**40 s is far past any ceiling
    seconds = min(policy.lock_seconds * 2**doublings, policy.lock_max_seconds)
    return timedelta(seconds=seconds)


def still_counted(policy: LockPolicy, updated_at: datetime, now: datetime) -> bool:
    """Whether failures last counted at `updated_at` still count at `now`."""
    return (now - updated_at).total_seconds() < policy.window_seconds
