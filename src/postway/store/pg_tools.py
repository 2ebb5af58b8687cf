"""PostgreSQL's own client tools for backups: `pg_dump` and `pg_restore` as child processes.

The connection comes from POSTWAY_DATABASE_URL and is handed to the child through libpq's
environment (PGHOST, PGPASSWORD, ...), never its command line, where other users could read
it in the process list. Messages quote the tool's stderr with the password taken out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from postway.errors import PostwayError

# asyncpg's `ssl=` (what Postway's URL carries) and libpq's `sslmode=` both map to PGSSLMODE
_SSL_KEYS = ("sslmode", "ssl")


@dataclass(frozen=True)
class PgTarget:
    """Where the configured database is, as libpq environment variables for a child."""

    env: dict[str, str]
    database: str
    password: str
    shown: str  # for messages: the URL with the password hidden

    def redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def pg_target(url: str) -> PgTarget:
    """Parse a `postgresql[+driver]://user:pw@host:port/db?ssl=...` URL."""
    u = make_url(url).set(drivername="postgresql")
    if not u.database:
        raise PostwayError(f"{u.render_as_string(hide_password=True)} names no database")
    env: dict[str, str] = {"PGDATABASE": u.database}
    host = u.host or str(u.query.get("host", "") or "")
    if host:
        env["PGHOST"] = host
    if u.port:
        env["PGPORT"] = str(u.port)
    if u.username:
        env["PGUSER"] = u.username
    password = u.password or ""
    if password:
        env["PGPASSWORD"] = str(password)
    for key in _SSL_KEYS:
        value = u.query.get(key)
        if isinstance(value, str) and value:
            env["PGSSLMODE"] = value
    return PgTarget(env, u.database, str(password), u.render_as_string(hide_password=True))


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PostwayError(
            f"{name} was not found on PATH: install PostgreSQL's client tools (Debian/Ubuntu: "
            f"apt install postgresql-client) of the server's major version or newer"
        )
    return path


def run_tool(
    target: PgTarget,
    args: list[str],
    *,
    watch: Path | None = None,
    progress: Callable[[int], None] | None = None,
    stderr_file: Path,
) -> None:
    """Run `pg_dump`/`pg_restore` (args[0]) against `target`; PostwayError with its stderr
    when it fails. While it runs, `progress` gets the size of `watch` (the growing dump)
    about once a second."""
    env = {**os.environ, **target.env}
    name = Path(args[0]).name
    with stderr_file.open("wb") as err:
        proc = subprocess.Popen(  # noqa: S603 - a fixed tool, arguments built here, no shell
            [*args, "--no-password"], env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if progress is not None and watch is not None and watch.exists():
                        progress(watch.stat().st_size)
        except BaseException:  # Ctrl-C or anything else: the child does not outlive us
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        text = stderr_file.read_bytes().decode("utf-8", "replace").strip()[-2000:]
        raise PostwayError(
            f"{name} failed (exit {proc.returncode}) for {target.shown}: "
            f"{target.redact(text) or 'no message'}"
        )


def dump(target: PgTarget, out: Path, progress: Callable[[int], None] | None = None) -> None:
    """A custom-format dump of the whole database; uncompressed, the bundle gzips it once."""
    exe = find_tool("pg_dump")
    run_tool(
        target,
        [exe, "--format=custom", "--compress=0", f"--file={out}", "--dbname", target.database],
        watch=out,
        progress=progress,
        stderr_file=out.with_name("pg_dump.stderr"),
    )


def restore(target: PgTarget, dump_file: Path) -> None:
    """Load a dump in one transaction (all or nothing). Objects of the dump that exist are
    dropped first (a migrated but empty database); owners and grants are the restoring
    user's, so a dump from another server and role restores as is."""
    exe = find_tool("pg_restore")
    run_tool(
        target,
        [
            exe, "--single-transaction", "--exit-on-error", "--clean", "--if-exists",
            "--no-owner", "--no-privileges", "--dbname", target.database, str(dump_file),
        ],
        stderr_file=dump_file.with_name("pg_restore.stderr"),
    )  # fmt: skip


async def tables_with_rows(url: str) -> list[str]:
    """Tables of the database holding at least one row (Alembic's version table aside)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT n.nspname, c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 2"
                )
            )
            found = []
            for schema, table in rows.all():
                if table == "alembic_version":
                    continue
                qualified = f"{_quote(schema)}.{_quote(table)}"
                query = text(f"SELECT EXISTS (SELECT 1 FROM {qualified})")  # noqa: S608
                if (await conn.execute(query)).scalar():
                    found.append(table)
            return found
    except (OSError, SQLAlchemyError) as exc:
        target = pg_target(url)
        reason = str(getattr(exc, "orig", None) or exc)
        raise PostwayError(f"cannot read {target.shown}: {target.redact(reason)}") from None
    finally:
        await engine.dispose()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
