"""Every change of a delivery's state goes through `transition`, which also appends its event.

The kinds of change, each a small value naming what happened:

    attempt results (by the worker holding the lease):  Finish, Defer, ThrottleWait, Park
    from outside (no lease held):                       Bounce, Complaint, RetryNow, Resend,
                                                        Purge, Park
    set-based, for connected accounts:                  release_parked

Parking (account paused, disconnected or needing a reconnect): the delivery becomes `deferred`
with reason `channel-paused` or `channel-disconnected` (`PARK_REASONS`), no lease, and `due_at`
at the pause end or, without one, at the delivery's `expires_at` (when the pipeline's account
step sees it again and fails it if the account is still unusable). A park by the lease holder
gives back the attempt its claim counted. `release_parked` makes every parked delivery matching
the caller's conditions due at once, in original order (`due_at = created_at`): one UPDATE and
one INSERT of their events.

`transition_many` is the batch form for a lease holder's results (the worker records many at
once): the same rules on plain rows (`queue.Held`), then Core statements: one UPDATE per group
of deliveries given identical values, one executemany UPDATE for the rest, and one INSERT
executed for all their events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.base import Outcome
from postway.delivery.queue import Held
from postway.domain.states import (
    REASON_CHANNEL_DISCONNECTED,
    REASON_CHANNEL_PAUSED,
    DeliveryState,
)
from postway.errors import Conflict
from postway.store.events import append_event, event_row
from postway.store.models import Delivery, DeliveryEvent

PARK_REASONS = (REASON_CHANNEL_PAUSED, REASON_CHANNEL_DISCONNECTED)
_IN_CHUNK = 1000  # ids per `IN (...)`, well inside SQLite's and PostgreSQL's bind limits

Row = Delivery | Held  # an ORM delivery (one change) or a holder's plain row (batches)
# emit(row, event type, **detail): append the change's event; returns it (None: not kept)
Emit = Callable[..., Any]
WAITING = (DeliveryState.QUEUED.value, DeliveryState.DEFERRED.value)
RESENDABLE = (DeliveryState.FAILED.value, DeliveryState.BOUNCED.value)


# --- the kinds of change ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finish:
    """An attempt's final result: delivered, sent, bounced, failed (expired too), suppressed."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Defer:
    """An attempt failed for now; tried again at `next_attempt_at` (before the expiry)."""

    outcome: Outcome
    next_attempt_at: datetime
    unknown: bool = False  # the connection broke after the final dot: it may have arrived


@dataclass(frozen=True, slots=True)
class ThrottleWait:
    """The mailbox's sending allowance is used up: wait for the window; not an attempt."""

    until: datetime
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Park:
    """The channel's account cannot send (paused, disconnected): wait without spending an
    attempt, until `until` or, when None, until released (at the latest `expires_at`)."""

    reason: str  # one of PARK_REASONS
    until: datetime | None = None
    note: str | None = None  # a sentence for the user: why it waits, what to do


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery status notification said the mail bounced (even after it was delivered)."""

    reason: str
    status: str | None
    diagnostic: str | None
    hard: bool | None
    remote_mta: str | None
    reply_code: int | None
    detail: Mapping[str, Any] = field(default_factory=dict)  # e.g. source, bounce_message_id


@dataclass(frozen=True, slots=True)
class Complaint:
    """The recipient reported the mail as spam: recorded; the state stands."""

    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetryNow:
    """An operator asks for a waiting delivery to be tried now."""

    by: str


@dataclass(frozen=True, slots=True)
class Resend:
    """An operator sends a failed or bounced delivery again, with a fresh lifetime."""

    by: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Purge:
    """An operator takes a waiting delivery out of the queue: it fails with reason `purged`."""

    by: str


Change = Finish | Defer | ThrottleWait | Park | Bounce | Complaint | RetryNow | Resend | Purge
_HOLDER_ONLY = (Finish, Defer, ThrottleWait)
_HOLDER_RESULTS = (Finish, Defer, ThrottleWait, Park)

# The columns each kind of holder result sets (as `_apply` leaves them on the row)
_OUTCOME_COLUMNS = (
    "state", "due_at", "lease_owner", "updated_at",
    "reason", "status", "reply_code", "diagnostic", "remote_mta", "hard",
)  # fmt: skip
_WRITES: dict[type, tuple[str, ...]] = {
    Finish: _OUTCOME_COLUMNS,
    Defer: _OUTCOME_COLUMNS,
    ThrottleWait: ("attempts", "due_at", "lease_owner", "updated_at"),
    Park: ("attempts", "state", "due_at", "lease_owner", "updated_at", "reason", "diagnostic"),
}
_OUTSIDE_ONLY = (Bounce, Complaint, RetryNow, Resend, Purge)


class InvariantBroken(RuntimeError):
    """A change would leave a delivery breaking the queue's invariants (a bug, not input)."""


# --- the one function ------------------------------------------------------------------------


def leased(d: Row, now: datetime) -> bool:
    """True while a worker holds the delivery: `lease_owner` set and the lease (`due_at`) live."""
    return d.lease_owner is not None and d.due_at is not None and d.due_at > now


def transition(
    s: AsyncSession, d: Delivery, change: Change, *, now: datetime, holder: str | None = None
) -> DeliveryEvent | None:
    """Apply `change` to `d` and append its event; return the event, or None when dropped.

    `holder` is the id of the worker recording an attempt's result (Finish, Defer,
    ThrottleWait, and Park from the pipeline); None for every change from outside.
    Invariants kept here, which the queue and its callers rely on:

    1. `due_at` is NULL exactly when the state is final (delivered, sent, bounced, failed,
       suppressed); a final delivery holds no lease.
    2. A leased delivery is never handed to a second worker. Leased = `lease_owner` set and
       `due_at` (the lease expiry) still ahead. Only the holder records an attempt's result, and
       only while `lease_owner` still names it (else the result is dropped: a worker that took
       over after the lease ran out wins). While a lease is live, changes from outside never
       move `due_at` before its expiry nor clear `lease_owner`:
         - RetryNow: the attempt in progress is the retry. Nothing changes; the request is
           recorded ("retry-requested", with a note) and the holder's result stands.
         - Purge: refused with Conflict; the mail may be on the wire. Purge after the attempt.
         - Park from outside: nothing changes (None); the holder's pipeline parks it if needed.
         - Resend: only final deliveries, which hold no lease.
         - Bounce: final, so it ends the lease and fences the holder out (its late result is
           dropped). The holder's send may still be on the wire: a Resend made in that moment
           can overlap it. A DSN for a delivery being retried is rare; this is the one gap.
    3. `attempts` grows only in `queue.claim_due`, the start of a real attempt. A holder's
       change that is not an attempt (ThrottleWait, Park) gives the claim's count back.
    4. Every change that is applied appends exactly one event row, in the caller's transaction.
    """
    if isinstance(change, _HOLDER_ONLY) and holder is None:
        raise ValueError(f"{type(change).__name__} is recorded by the worker holding the lease")
    if isinstance(change, _OUTSIDE_ONLY) and holder is not None:
        raise ValueError(f"{type(change).__name__} is not a worker's attempt result")
    if holder is not None and d.lease_owner != holder:
        return None  # the lease was lost: whoever holds it now records the result
    event: DeliveryEvent | None = _apply(partial(append_event, s), d, change, now, holder)
    _check(d)
    return event


async def transition_many(
    s: AsyncSession, changes: Sequence[tuple[Held, Change]], *, now: datetime, holder: str
) -> list[Held]:
    """`transition` for many results of the lease holder `holder` at once (Finish, Defer,
    ThrottleWait, Park), in the caller's transaction; returns the deliveries changed.

    The same rules and invariants as `transition`, applied to rows the caller read with
    `queue.held` (held by `holder`, locked): a row whose `lease_owner` is not `holder` is
    left alone, and every UPDATE is fenced by `lease_owner = holder` as well. Writes: one
    UPDATE for each group of deliveries given identical values, one executemany UPDATE by id
    for the others, one INSERT executed for all the events.
    """
    events: list[dict[str, Any]] = []

    def emit(d: Row, type_: str, **detail: Any) -> dict[str, Any]:
        events.append(event_row(d.id, d.org_id, type_, d.state, detail, now))
        return events[-1]

    # columns written -> values -> ids given them
    writes: dict[tuple[str, ...], dict[tuple[Any, ...], list[str]]] = {}
    changed: list[Held] = []
    for d, change in changes:
        if not isinstance(change, _HOLDER_RESULTS):
            raise ValueError(f"{type(change).__name__} is not a worker's attempt result")
        if d.lease_owner != holder:
            continue  # the lease was lost: whoever holds it now records the result
        if _apply(emit, d, change, now, holder) is None:
            continue
        _check(d)
        columns = _WRITES[type(change)]
        values = tuple(getattr(d, c) for c in columns)
        writes.setdefault(columns, {}).setdefault(values, []).append(d.id)
        changed.append(d)
    table = cast(Table, Delivery.__table__)
    # rows each UPDATE changed (-1: the driver does not say, as asyncpg's executemany); fewer
    # than asked means the rows were not read under this transaction's lock: a bug, undone
    written: list[int] = []
    for columns, by_values in writes.items():
        keys = [f"v_{c}" for c in columns]
        singles: list[dict[str, Any]] = []
        for values, ids in by_values.items():
            if len(ids) == 1:
                singles.append(
                    {"k_id": ids[0], "k_holder": holder, **dict(zip(keys, values, strict=True))}
                )
                continue
            for i in range(0, len(ids), _IN_CHUNK):
                written.append(
                    await _rowcount(
                        s,
                        update(table)
                        .where(
                            table.c.id.in_(ids[i : i + _IN_CHUNK]), table.c.lease_owner == holder
                        )
                        .values(dict(zip(columns, values, strict=True))),
                    )
                )
        if singles:
            written.append(await _rowcount(s, _update_by_id(columns), singles))
    if min(written, default=0) >= 0 and sum(written) != len(changed):
        raise InvariantBroken(
            f"{len(changed)} results recorded by {holder} but {sum(written)} rows held: "
            "transition_many needs the rows read by queue.held in the same transaction"
        )
    if events:
        await s.execute(insert(DeliveryEvent), events)
    return changed


async def _rowcount(s: AsyncSession, stmt: Update, params: Any = None) -> int:
    result = await s.execute(stmt, params)
    return int(result.rowcount)  # type: ignore[attr-defined]


@lru_cache(maxsize=8)
def _update_by_id(columns: tuple[str, ...]) -> Update:
    """UPDATE deliveries SET <columns> WHERE id = :k_id AND lease_owner = :k_holder, for
    executemany (one parameter set per delivery)."""
    table = cast(Table, Delivery.__table__)
    return (
        update(table)
        .where(table.c.id == bindparam("k_id"), table.c.lease_owner == bindparam("k_holder"))
        .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns})
    )


def _apply(emit: Emit, d: Row, change: Change, now: datetime, holder: str | None) -> Any:
    match change:
        case Finish(outcome=o):
            if not o.state.is_final:
                raise ValueError(f"Finish needs a final state, not {o.state}")
            _end(d, o.state.value, now)
            _copy_outcome(d, o)
            return emit(d, o.state.value, **_outcome_detail(d, o))
        case Defer(outcome=o, next_attempt_at=when, unknown=unknown):
            _wait(d, DeliveryState.DEFERRED, when, now)
            _copy_outcome(d, o)
            detail = _outcome_detail(d, o)
            detail["next_attempt_at"] = when.isoformat()
            if unknown:
                detail["note"] = (
                    "the connection failed after the message was sent: it may have arrived; "
                    "it is sent once more, since a duplicate is the lesser harm than a loss"
                )
            return emit(d, "unknown-outcome" if unknown else "deferred", **detail)
        case ThrottleWait(until=until, note=note):
            # Not an attempt and not subject to the queue lifetime: it waits for its window.
            d.attempts = max(d.attempts - 1, 0)
            d.due_at, d.lease_owner, d.updated_at = until, None, now
            return emit(d, "throttled", next_attempt_at=until.isoformat(), note=note)
        case Park():
            return _park(emit, d, change, now, holder)
        case Bounce():
            return _bounce(emit, d, change, now)
        case Complaint(detail=detail):
            return emit(d, "complaint", **dict(detail))
        case RetryNow(by=who):
            if d.state not in WAITING:
                raise Conflict(
                    f"delivery {d.id} is {d.state}; only failed, bounced, queued or deferred "
                    "deliveries can be retried"
                )
            if leased(d, now):
                return emit(
                    d, "retry-requested", by=who,
                    note="a worker is trying it right now; that attempt is the retry",
                )  # fmt: skip
            d.due_at, d.updated_at = now, now
            return emit(d, "retry-requested", by=who)
        case Resend(by=who, expires_at=expires_at):
            if d.state not in RESENDABLE:
                raise Conflict(
                    f"delivery {d.id} is {d.state}; only failed, bounced, queued or deferred "
                    "deliveries can be retried"
                )
            _wait(d, DeliveryState.QUEUED, now, now)
            d.expires_at = expires_at
            return emit(d, "requeued", by=who)
        case Purge(by=who):
            if d.state not in WAITING:
                raise Conflict(
                    f"delivery {d.id} is {d.state}; only queued or deferred can be purged"
                )
            if leased(d, now):
                raise Conflict(
                    f"delivery {d.id} is being sent right now; purge it once this attempt's "
                    "result is recorded (in a moment)"
                )
            _end(d, DeliveryState.FAILED.value, now)
            d.reason, d.diagnostic = "purged", f"removed from the queue by {who}"
            return emit(d, "failed", by=who, reason="purged")
    raise TypeError(f"not a delivery change: {change!r}")


def _park(emit: Emit, d: Row, p: Park, now: datetime, holder: str | None) -> Any:
    if p.reason not in PARK_REASONS:
        raise ValueError(f"park reason must be one of {PARK_REASONS}, not {p.reason!r}")
    if d.state not in WAITING:
        return None  # final: nothing waits
    if holder is None and leased(d, now):
        return None  # a worker holds it; its pipeline parks it if the account still cannot send
    if holder is not None:
        d.attempts = max(d.attempts - 1, 0)  # the claim counted an attempt that did not happen
    until = max(p.until if p.until is not None else d.expires_at, now)
    _wait(d, DeliveryState.DEFERRED, until, now)
    d.reason, d.diagnostic = p.reason, p.note
    return emit(d, "parked", reason=p.reason, until=until.isoformat(), note=p.note)


def _bounce(emit: Emit, d: Row, b: Bounce, now: datetime) -> Any:
    was = d.state
    # Final state: off the queue, and any worker still holding a lease is fenced out.
    _end(d, DeliveryState.BOUNCED.value, now)
    d.reason, d.status, d.diagnostic, d.hard = b.reason, b.status, b.diagnostic, b.hard
    d.remote_mta, d.reply_code = b.remote_mta, b.reply_code
    detail: dict[str, Any] = {
        **b.detail,
        "previous_state": was,
        "reason": b.reason,
        "status": b.status,
        "diagnostic": b.diagnostic,
        "remote_mta": b.remote_mta,
        "hard": b.hard,
    }
    return emit(d, "bounced", **detail)


async def release_parked(
    s: AsyncSession, *where: ColumnElement[bool], now: datetime, by: str | None = None
) -> list[str]:
    """Make every parked delivery matching `where` due now, in original order; return their ids.

    One UPDATE (`due_at = created_at`, so the oldest goes first and all are due at once; the
    park reason cleared) and one INSERT of a "released" event each. Deliveries a worker holds
    are left to it. Example, when a user reconnects their Gmail account:
    `await release_parked(s, Delivery.user_id == uid, Delivery.channel == "gmail", now=now)`.
    """
    rows = (
        await s.execute(
            update(Delivery)
            .where(
                Delivery.state == DeliveryState.DEFERRED.value,
                Delivery.reason.in_(PARK_REASONS),
                Delivery.lease_owner.is_(None),
                *where,
            )
            .values(due_at=Delivery.created_at, reason=None, diagnostic=None, updated_at=now)
            .returning(Delivery.id, Delivery.org_id, Delivery.created_at)
            .execution_options(synchronize_session=False)
        )
    ).all()
    rows = sorted(rows, key=lambda r: (r.created_at, r.id))
    if rows:
        detail = {"by": by} if by else {}
        await s.execute(
            insert(DeliveryEvent),
            [
                event_row(r.id, r.org_id, "released", DeliveryState.DEFERRED.value, detail, now)
                for r in rows
            ],
        )
    return [r.id for r in rows]


# --- helpers ---------------------------------------------------------------------------------


def _end(d: Row, state: str, now: datetime) -> None:
    d.state, d.due_at, d.lease_owner, d.updated_at = state, None, None, now


def _wait(d: Row, state: DeliveryState, due: datetime, now: datetime) -> None:
    d.state, d.due_at, d.lease_owner, d.updated_at = state.value, due, None, now


def _copy_outcome(d: Row, o: Outcome) -> None:
    d.reason, d.status, d.reply_code = o.reason, o.status, o.reply_code
    d.diagnostic, d.remote_mta, d.hard = o.diagnostic, o.remote_mta, o.hard


def _outcome_detail(d: Row, o: Outcome) -> dict[str, object]:
    return {
        "attempt": d.attempts,
        "reason": o.reason,
        "status": o.status,
        "reply_code": o.reply_code,
        "diagnostic": o.diagnostic,
        "remote_mta": o.remote_mta,
        **o.detail,
    }


def _check(d: Row) -> None:
    final = DeliveryState(d.state).is_final
    if (d.due_at is None) != final:
        raise InvariantBroken(f"delivery {d.id}: state {d.state} with due_at {d.due_at}")
    if final and d.lease_owner is not None:
        raise InvariantBroken(f"delivery {d.id}: final state {d.state} still leased")
