"""Backups: one file holding the database and the keys a restore needs, and its restore.

A backup is a gzipped tar, mode 0600, holding in this order:

    manifest.json   format, database kind, what is inside
    keys/...        secret.key (unless POSTWAY_SECRET_KEY was set) and the DKIM private keys
    postway.db      SQLite: a consistent copy by the online backup API
    postgres.dump   PostgreSQL: `pg_dump --format=custom`

The keys are in it because the database alone cannot be used without them: relay passwords
and connected accounts are encrypted with the secret key, return paths are signed with it,
and the DKIM key is the one whose public half is in DNS.

It is built in a temporary folder next to the target and linked into place at the end, so
the target is either absent or whole. Taking one is safe while Postway runs: SQLite's copy
reads one snapshot (WAL lets writers carry on meanwhile), pg_dump reads one transaction.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from sqlalchemy.engine import make_url

from postway import __version__
from postway.config import Settings
from postway.errors import PostwayError
from postway.mta.dkim import KEY_FILES
from postway.private_files import (
    FILE_MODE,
    create_private_file,
    private_dir,
    touch_private_file,
    write_private_file,
)
from postway.store import pg_tools

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "postway.db"
PG_MEMBER = "postgres.dump"
KEY_PREFIX = "keys/"
# where Settings.resolved_secret_key keeps a key it generated (a file name, not a secret)
SECRET_FILE = "secret.key"  # noqa: S105
KEY_NAMES = (SECRET_FILE, *KEY_FILES.values())
PAGES_PER_STEP = 4096  # 16 MB of 4 KB pages between progress reports
_CHUNK = 1024 * 1024

Progress = Callable[[str, int, int], None]
"""Called as work goes on with (what, done, total); total is 0 when not known ahead."""


@dataclass
class Outcome:
    path: Path
    database: str  # "sqlite" or "postgresql"
    size: int  # bytes of the backup file
    members: list[str]
    notes: list[str] = field(default_factory=list)


# --- backup ---------------------------------------------------------------------------------


def backup(
    settings: Settings,
    target: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    pages_per_step: int = PAGES_PER_STEP,
) -> Outcome:
    """Write a backup of the configured database and keys to `target`."""
    target = Path(os.path.abspath(target.expanduser()))
    _check_target(target, force)
    kind, url = _database(settings)
    keys, notes = _keys_to_save(settings)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise PostwayError(f"cannot write in {target.parent}: {exc.strerror}") from None
    try:
        if kind == "sqlite":
            member = work / SQLITE_MEMBER
            copy_sqlite(_sqlite_path(url), member, pages_per_step, progress, standalone=True)
        else:
            member = work / PG_MEMBER
            report = (lambda n: progress("pg_dump bytes", n, 0)) if progress else None
            pg_tools.dump(pg_tools.pg_target(url), member, report)
        manifest = {
            "format": FORMAT,
            "postway": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "database": kind,
            "secret_key": "environment" if settings.secret_key else (
                "file" if SECRET_FILE in keys else "missing"
            ),
            "keys": sorted(keys),
        }  # fmt: skip
        bundle = work / "backup.tar.gz"
        members = _write_bundle(bundle, manifest, keys, member, progress)
        _publish(bundle, target, force)
    except (OSError, sqlite3.Error, tarfile.TarError) as exc:
        raise PostwayError(f"backup failed: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(target, kind, target.stat().st_size, members, notes)


def _check_target(target: Path, force: bool) -> None:
    parent = target.parent
    if not parent.exists():
        raise PostwayError(f"no folder {parent}: create it first")
    if not parent.is_dir():
        raise PostwayError(f"{parent} is not a folder")
    if target.is_dir():
        raise PostwayError(f"{target} is a folder: name the backup file to write")
    if target.exists() and not force:
        raise PostwayError(f"{target} exists: choose another name, or pass --force to replace it")


def _database(settings: Settings) -> tuple[str, str]:
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        return "sqlite", url
    if url.startswith("postgresql"):
        return "postgresql", url
    raise PostwayError("backups cover SQLite and PostgreSQL only")


def _sqlite_path(url: str) -> Path:
    name = make_url(url).database or ""
    if not name or name == ":memory:":
        raise PostwayError("the database is in memory: there is nothing on disk to back up")
    return Path(name)


def _keys_to_save(settings: Settings) -> tuple[dict[str, bytes], list[str]]:
    """Key files from the data folder, and notes on what the backup cannot hold."""
    keys: dict[str, bytes] = {}
    notes: list[str] = []
    for name in KEY_NAMES:
        if name == SECRET_FILE and settings.secret_key:
            notes.append(
                "POSTWAY_SECRET_KEY is set, so the backup holds no secret key: keep that value "
                "with the backup; a restore needs it"
            )
            continue
        path = settings.data_dir / name
        if path.is_file():
            keys[name] = path.read_bytes()
    if not keys:
        notes.append(f"no key files in {settings.data_dir} (has Postway run with this folder?)")
    return keys, notes


def copy_sqlite(
    source: Path,
    dest: Path,
    pages_per_step: int = PAGES_PER_STEP,
    progress: Progress | None = None,
    *,
    standalone: bool = False,
) -> int:
    """Copy a live SQLite database with the online backup API; returns the pages copied.

    The source connection holds one read transaction for the whole copy. Without it each
    step would read the newest state and SQLite restarts a backup whenever another
    connection writes between steps: under a steady stream of accepted mail a large copy
    might never finish. In WAL mode that read snapshot does not block the writers.
    `standalone` leaves the copy as one file (rollback journal) instead of WAL."""
    if not source.is_file():
        raise PostwayError(f"no database at {source} (check POSTWAY_DATA_DIR or DATABASE_URL)")
    touch_private_file(dest)
    src = sqlite3.connect(source, timeout=30, isolation_level=None)
    try:
        dst = sqlite3.connect(dest, timeout=30, isolation_level=None)
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot
            pages = 0

            def step(_status: int, remaining: int, total: int) -> None:
                nonlocal pages
                pages = total
                if progress is not None:
                    progress("copied pages", total - remaining, total)

            src.backup(dst, pages=max(1, pages_per_step), progress=step)
            src.execute("COMMIT")
            if standalone:
                dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise PostwayError(f"the copy of {source} does not check out: {check}")
            return pages
        finally:
            dst.close()
    finally:
        src.close()


def _write_bundle(
    bundle: Path,
    manifest: dict[str, object],
    keys: dict[str, bytes],
    db_file: Path,
    progress: Progress | None,
) -> list[str]:
    fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            data = json.dumps(manifest, indent=2).encode()
            _add(tar, MANIFEST, len(data), io.BytesIO(data))
            for name, key in sorted(keys.items()):
                _add(tar, KEY_PREFIX + name, len(key), io.BytesIO(key))
            size = db_file.stat().st_size
            with db_file.open("rb") as f:
                # a raw reader that counts: tarfile only calls read() on it
                reader = cast(IO[bytes], _Counted(f, size, progress)) if progress else f
                _add(tar, db_file.name, size, reader)
            members = tar.getnames()
        raw.flush()
        os.fsync(raw.fileno())
    return members


def _add(tar: tarfile.TarFile, name: str, size: int, data: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, FILE_MODE, int(time.time())
    tar.addfile(info, data)


class _Counted(io.RawIOBase):
    """A reader that reports how much of a file has been read (the compression's progress)."""

    def __init__(self, f: IO[bytes], total: int, progress: Progress) -> None:
        super().__init__()
        self._f, self._total, self._progress, self._done = f, total, progress, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._done += len(data)
        self._progress("compressed bytes", self._done, self._total)
        return data


def _publish(bundle: Path, target: Path, force: bool) -> None:
    """Put the finished file in place whole; without `force` never over an existing file,
    even one created since the check at the start."""
    if force:
        os.replace(bundle, target)
    else:
        try:
            os.link(bundle, target)
        except FileExistsError:
            raise PostwayError(f"{target} exists: pass --force to replace it") from None
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name survives a crash
    finally:
        os.close(dir_fd)


# --- restore --------------------------------------------------------------------------------


def restore(
    settings: Settings, source: Path, *, force: bool = False, progress: Progress | None = None
) -> Outcome:
    """Restore a backup into the configured database and data folder. Both must be empty of
    data (a migrated database with no rows counts as empty) unless `force`; key files that
    differ from the backup's are replaced only with `force`. Stop Postway first."""
    source = Path(os.path.abspath(source.expanduser()))
    if not source.is_file():
        raise PostwayError(f"no backup file {source}")
    kind, url = _database(settings)
    try:
        with tarfile.open(source, mode="r:gz") as tar:
            return _restore_from(tar, settings, source, kind, url, force, progress)
    except (tarfile.TarError, EOFError, OSError, sqlite3.Error) as exc:
        raise PostwayError(f"restore from {source} failed: {exc}") from None


def _restore_from(
    tar: tarfile.TarFile,
    settings: Settings,
    source: Path,
    kind: str,
    url: str,
    force: bool,
    progress: Progress | None,
) -> Outcome:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise PostwayError(f"{source} is not a Postway backup (it has no {MANIFEST} first)")
    manifest = json.loads(_read_small(tar, first))
    if manifest.get("format") != FORMAT:
        raise PostwayError(f"{source} has backup format {manifest.get('format')!r}; expected 1")
    if manifest.get("database") != kind:
        raise PostwayError(
            f"{source} is a {manifest.get('database')} backup but the configured database is "
            f"{kind}: point POSTWAY_DATABASE_URL at a {manifest.get('database')} database"
        )
    keys: dict[str, bytes] = {}
    member = tar.next()
    while member is not None and member.name.startswith(KEY_PREFIX):
        name = member.name[len(KEY_PREFIX) :]
        if name not in KEY_NAMES or not member.isfile() or name in keys:
            raise PostwayError(f"{source} holds an unexpected entry {member.name!r}")
        keys[name] = _read_small(tar, member)
        member = tar.next()
    expected = SQLITE_MEMBER if kind == "sqlite" else PG_MEMBER
    if member is None or member.name != expected or not member.isfile():
        raise PostwayError(f"{source} holds no {expected}")
    data_dir = settings.data_dir
    _check_keys(data_dir, keys, force)
    _check_empty(kind, url, force)
    db_in = tar.extractfile(member)
    assert db_in is not None  # a regular file (checked above)
    if kind == "sqlite":
        dest = _sqlite_path(url)
        private_dir(dest.parent)
        temp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.restore")
        try:
            _extract(db_in, temp, member.size, progress)
            copy_sqlite(temp, dest, PAGES_PER_STEP, progress)
        finally:
            temp.unlink(missing_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=".restore.", dir=private_dir(data_dir)))
        try:
            dump_file = work / PG_MEMBER
            _extract(db_in, dump_file, member.size, progress)
            pg_tools.restore(pg_tools.pg_target(url), dump_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _write_keys(data_dir, keys)
    notes = _restore_notes(settings, manifest, keys)
    return Outcome(
        source,
        kind,
        source.stat().st_size,
        [MANIFEST, *(KEY_PREFIX + k for k in keys), expected],
        notes,
    )


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > 1024 * 1024:
        raise PostwayError(f"{member.name} in the backup is too large to be what it says")
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _extract(src: IO[bytes], dest: Path, total: int, progress: Progress | None) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    done = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress("unpacked bytes", done, total)


def _check_keys(data_dir: Path, keys: dict[str, bytes], force: bool) -> None:
    differing = [
        name
        for name, data in keys.items()
        if (data_dir / name).exists() and (data_dir / name).read_bytes() != data
    ]
    if differing and not force:
        raise PostwayError(
            f"{data_dir} already holds other {', '.join(differing)}: restore into a fresh "
            "data folder, or pass --force to replace them (what was signed or encrypted with "
            "the current ones stops working)"
        )


def _check_empty(kind: str, url: str, force: bool) -> None:
    if force:
        return
    if kind == "sqlite":
        full = _sqlite_tables_with_rows(_sqlite_path(url))
    else:
        full = asyncio.run(pg_tools.tables_with_rows(url))
    if full:
        shown = ", ".join(full[:5]) + (", ..." if len(full) > 5 else "")
        raise PostwayError(
            f"the database already holds data ({shown}): restore into an empty database, or "
            "pass --force to replace it"
        )


def _sqlite_tables_with_rows(path: Path) -> list[str]:
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=30)
    try:
        names = [
            row[0]
            for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        quoted = {n: '"' + n.replace('"', '""') + '"' for n in names if n != "alembic_version"}
        return [
            n
            for n, q in quoted.items()
            if con.execute(f"SELECT EXISTS (SELECT 1 FROM {q})").fetchone()[0]  # noqa: S608
        ]
    finally:
        con.close()


def _write_keys(data_dir: Path, keys: dict[str, bytes]) -> None:
    private_dir(data_dir)
    for name, data in keys.items():
        path = data_dir / name
        if not path.exists():
            create_private_file(path, data)
        elif path.read_bytes() != data:  # allowed by --force (checked before)
            write_private_file(path, data)


def _restore_notes(
    settings: Settings, manifest: dict[str, object], keys: dict[str, bytes]
) -> list[str]:
    notes = []
    if manifest.get("secret_key") == "environment" and not settings.secret_key:
        notes.append(
            "the backup was taken with POSTWAY_SECRET_KEY set and holds no secret key: set the "
            "same POSTWAY_SECRET_KEY before starting Postway"
        )
    restored = keys.get(SECRET_FILE)
    if restored is not None and settings.secret_key not in ("", restored.decode().strip()):
        notes.append(
            f"POSTWAY_SECRET_KEY is set and overrides the restored {SECRET_FILE}: unset it, "
            "or secrets stored in the database cannot be read"
        )
    return notes
