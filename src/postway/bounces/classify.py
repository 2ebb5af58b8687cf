"""`postway bounce classify PATH...`: one row per bounced recipient, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from postway.bounces.parse import parse_bounce

_NOT_FAILURES = {"auto-reply": "vacation", "feedback": "feedback", "delivered": "delivered"}


def _expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.eml") if p.is_file())
        else:
            yield path


def classify_files(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Rows `{"file", "recipient", "status", "reason", "hard"}` in the order each email
    reports its recipients; folders are searched for `.eml` files recursively, sorted.

    A file that is not a bounce yields one row with reason None (or "vacation", "feedback",
    "delivered"); an unreadable file yields one row with "error".
    """
    for path in _expand([Path(p) for p in paths]):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            yield {"file": str(path), "recipient": None, "status": None, "reason": None,
                   "hard": False, "error": f"cannot read: {exc.strerror or exc}"}
            continue
        report = parse_bounce(raw)
        if not report.results:
            yield {"file": str(path), "recipient": None, "status": None,
                   "reason": _NOT_FAILURES.get(report.kind), "hard": False}
            continue
        for result in report.results:
            yield {"file": str(path), "recipient": result.recipient, "status": result.status,
                   "reason": result.reason, "hard": result.hard}
