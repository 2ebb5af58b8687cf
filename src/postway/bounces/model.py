"""What a parsed bounce says: one report per email, one result per recipient."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["bounce", "delay", "auto-reply", "feedback", "delivered", "none"]


@dataclass(frozen=True)
class BounceResult:
    recipient: str | None
    status: str | None  # enhanced status code, e.g. "5.1.1"
    reason: str | None  # Sisimai's vocabulary (postway.domain.bounce_reasons.REASONS)
    hard: bool
    diagnostic: str = ""
    remote_mta: str | None = None
    action: str | None = None  # failed, delayed, delivered, ... as the DSN says
    # Which rule decided the reason, the document it rests on, and the text it matched
    # (`postway bounce classify --explain`; domain.bounce_rules).
    rule: str | None = None
    rule_source: str | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class BounceReport:
    kind: Kind
    results: list[BounceResult] = field(default_factory=list)
    # The exception type the parser's safety net caught (the report is then kind "none").
    parser_error: str | None = None
