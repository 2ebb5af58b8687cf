"""The parser's safety net: production never raises, but what it catches is counted (a
Prometheus counter) and logged by type, and the strict parser lets the exception through."""

from __future__ import annotations

import logging

import pytest

from postway.bounces.parse import parse_bounce, parse_bounce_strict, parser_exceptions
from postway.metrics import Metrics


def test_strict_parser_raises_what_the_safety_net_counts(caplog: pytest.LogCaptureFixture) -> None:
    # A value the parser cannot slice is a real internal exception (TypeError), no mock.
    with pytest.raises(TypeError):
        parse_bounce_strict(None)  # type: ignore[arg-type]

    before = parser_exceptions().get("TypeError", 0)
    with caplog.at_level(logging.WARNING, logger="postway.bounces.parse"):
        report = parse_bounce(None)  # type: ignore[arg-type]
    assert (report.kind, report.results, report.parser_error) == ("none", [], "TypeError")
    assert parser_exceptions()["TypeError"] == before + 1
    (record,) = [r for r in caplog.records if r.name == "postway.bounces.parse"]
    assert "TypeError" in record.getMessage()
    assert "NoneType" not in record.getMessage()  # the type only, never the message's text

    rendered = Metrics().render().decode()
    assert f'postway_bounce_parser_exceptions_total{{type="TypeError"}} {before + 1}.0' in rendered


def test_a_good_email_does_not_touch_the_counter() -> None:
    before = parser_exceptions()
    raw = (b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\n\n"
           b"<bob@example.net>: 550 5.1.1 user unknown\n")
    assert parse_bounce(raw).kind == "bounce"
    assert parser_exceptions() == before


def test_a_worker_report_of_a_caught_exception_is_counted_in_the_server() -> None:
    """Parsing runs in worker processes: the report they send back names the exception type,
    and the server's count (what /metrics reads) goes up when it arrives."""
    from postway.bounces.isolation import _report_from

    before = parser_exceptions().get("KeyError", 0)
    report = _report_from(b'{"kind": "none", "results": [], "parser_error": "KeyError"}')
    assert (report.kind, report.parser_error) == ("none", "KeyError")
    assert parser_exceptions()["KeyError"] == before + 1
