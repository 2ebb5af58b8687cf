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


def classify_files(paths: list[Path], *, explain: bool = False) -> Iterator[dict[str, Any]]:
    """Rows `{"file", "recipient", "status", "reason", "hard"}` in the order each email
    reports its recipients; folders are searched for `.eml` files recursively, sorted.

    A file that is not a bounce yields one row with reason None (or "vacation", "feedback",
    "delivered"); an unreadable file yields one row with "error". With `explain`, each row
    also has "explain": the rule that decided (`domain.bounce_rules`), its source and the
    text it matched.
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
            row: dict[str, Any] = {"file": str(path), "recipient": None, "status": None,
                                   "reason": _NOT_FAILURES.get(report.kind), "hard": False}
            if explain:
                row["explain"] = {"rule": None, "source": None, "evidence": (
                    f"the parser failed ({report.parser_error})" if report.parser_error
                    else f"not a bounce (kind {report.kind})")}
            yield row
            continue
        for result in report.results:
            row = {"file": str(path), "recipient": result.recipient, "status": result.status,
                   "reason": result.reason, "hard": result.hard}
            if explain:
                row["explain"] = {"rule": result.rule, "source": result.rule_source,
                                  "evidence": result.evidence}
            yield row
