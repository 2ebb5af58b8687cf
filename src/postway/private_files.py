"""Files only Postway's own user may read: the data folder, keys, the database, the inbox.

Directories are made 0700 and files 0600 at the moment they are created (the mode is given
to mkdir/open, so there is no window between creating and tightening). The umask can only
take bits away from these modes, never add them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (0700) if missing; its missing parents get the usual mode. An existing
    folder is left as its owner set it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
    return path


def create_private_file(path: Path, data: bytes) -> bool:
    """Write `path` (0600) only if it does not exist yet; False when it already did.

    The content is written to a unique temporary file first and linked into place, which
    fails if the name is taken: two processes starting at once never both write, and no one
    ever reads a half-written file."""
    private_dir(path.parent)
    tmp = _write_temporary(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def write_private_file(path: Path, data: bytes) -> None:
    """Write `path` (0600), replacing it atomically if it exists."""
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def touch_private_file(path: Path) -> None:
    """Make sure `path` exists, creating it empty (0600) when missing, so a library that
    opens it later (SQLite) does not create it with the umask's mode."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _write_temporary(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
