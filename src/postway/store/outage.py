"""Telling a database that cannot be reached (or is locked past its wait) from a bug: the
first is answered 503 with Retry-After — nothing was stored, try again — the second 500."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from postway.errors import Unavailable

RETRY_AFTER_SECONDS = 5


# What a database call can raise when the server is away: the driver's errors wrapped by
# SQLAlchemy, or (asyncpg opening a connection) the socket's own.
OUTAGE_ERRORS = (SQLAlchemyError, ConnectionError, TimeoutError)


# PostgreSQL's SQLSTATE classes that say "the server, not the request": 08 connection
# exception, 53 insufficient resources (disk full, too many connections), 57 operator
# intervention (shutting down, starting up).
_OUTAGE_SQLSTATE_CLASSES = ("08", "53", "57")


def _sqlstate(exc: BaseException) -> str | None:
    for e in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(e, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    code = _sqlstate(exc)
    if code is not None and code[:2] in _OUTAGE_SQLSTATE_CLASSES:
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def unavailable() -> Unavailable:
    return Unavailable(
        "the database is not available right now; nothing was stored, try again shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )


class OutageBackoff:
    """How a background loop waits out an unreachable database: 0.5 s doubling to 30 s, so a
    worker neither spins nor floods its log, and one line when the outage starts (repeated at
    most every minute) and one when it ends, instead of a traceback per poll."""

    FIRST = 0.5
    CEILING = 30.0
    REPEAT_LOG = 60.0

    def __init__(self, what: str, log: logging.Logger, *, ceiling: float = CEILING) -> None:
        self.what = what  # what the outage means for this loop, for the log
        self.log = log
        self.ceiling = ceiling
        self.delay = 0.0
        self.since: float | None = None
        self._logged_at = 0.0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note one more failed try; returns how long to wait before the next."""
        now = time.monotonic()
        self.delay = min(self.ceiling, self.delay * 2 if self.delay else self.FIRST)
        if self.since is None:
            self.since = now
        if self.since == now or now - self._logged_at >= self.REPEAT_LOG:
            self._logged_at = now
            self.log.warning("database unavailable (%s); %s", _short(exc), self.what)
        return self.delay

    def succeeded(self) -> None:
        if self.since is not None:
            self.log.warning(
                "database reachable again after %.1f s (%s)",
                time.monotonic() - self.since,
                self.what,
            )
        self.since = None
        self.delay = 0.0


def _short(exc: BaseException) -> str:
    """The error's class and first line: enough to tell a refused connection from a full disk,
    without the statement (which may hold addresses) or a traceback."""
    inner = getattr(exc, "orig", None) or exc
    first = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {first[:200]}" if first else type(inner).__name__
