"""Bounce intake: parse and classify bounce, delay, feedback and auto-reply emails."""

from postway.bounces.classify import classify_files
from postway.bounces.model import BounceReport, BounceResult
from postway.bounces.parse import parse_bounce

__all__ = ["BounceReport", "BounceResult", "classify_files", "parse_bounce"]
