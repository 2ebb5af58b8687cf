"""Engine and session factory for SQLite (WAL, one writer at a time) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from postway.private_files import touch_private_file

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """Owns the engines; `session()` hands out units of work, `reader()` read-only ones.

    On SQLite every `session()` transaction starts with BEGIN IMMEDIATE: writers queue on the
    database lock up front instead of failing when a read transaction tries to upgrade to a
    write, which is what makes the queue claim a safe single-writer operation. `reader()`
    transactions must never write; on PostgreSQL both are the same.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            if ":memory:" not in url:
                # SQLite would create the file with the umask's mode (often world-readable);
                # made 0600 first, its -wal and -shm files take the same mode from it
                touch_private_file(Path(url.split("///", 1)[1].split("?", 1)[0]))
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._read_engine: AsyncEngine | None = None
        if self.is_sqlite:
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            # Readers get plain BEGIN: in WAL mode they see a snapshot without waiting for
            # the writer lock. Only for work that never writes (a write there could fail).
            self._read_engine = create_async_engine(url, **kwargs)
            _sqlite_pragmas(self._read_engine, "BEGIN")
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)
        self.reader = async_sessionmaker(self._read_engine or self.engine, expire_on_commit=False)

    async def upgrade(self) -> None:
        """Apply every Alembic migration (idempotent)."""
        async with self.engine.connect() as conn:
            await conn.run_sync(_upgrade)
            await conn.commit()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _sqlite_pragmas(engine: AsyncEngine, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)
