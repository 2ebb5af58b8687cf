"""Telling a database that cannot be reached (or is locked past its wait) from a bug: the
first is answered 503 with Retry-After — nothing was stored, try again — the second 500."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from postway.errors import Unavailable

RETRY_AFTER_SECONDS = 5


# What a database call can raise when the server is away: the driver's errors wrapped by
# SQLAlchemy, or (asyncpg opening a connection) the socket's own.
OUTAGE_ERRORS = (SQLAlchemyError, ConnectionError, TimeoutError)


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def unavailable() -> Unavailable:
    return Unavailable(
        "the database is not available right now; nothing was stored, try again shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )
