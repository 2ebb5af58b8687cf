"""Hostile shapes of text (runs of blank lines, quote marks, spaces, tags, addresses, encoded
words) through every public entry point of the parser and classifier.

Tests assert outcomes, never speed: each case runs in the parser pool under a 30 s limit and
must come back as a normal result, not `BounceParseTimeout`. The inputs are 100 KB, which took
minutes to hours with the quadratic patterns fixed here (20 KB of blank lines took 28 s), and
take well under a second now: the limit is a verdict on "finished", with a wide margin.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from postway.bounces.dsn import field_blocks, human_text, parse_dsn
from postway.bounces.engines import engine_reason
from postway.bounces.feedback import is_auto_reply, parse_arf, parse_ses
from postway.bounces.formats import error_text, literal_command, prose_recipients, smtp_command
from postway.bounces.isolation import ParsePool
from postway.bounces.mime import addresses, header, parse_message
from postway.bounces.model import BounceReport
from postway.bounces.parse import parse_bounce
from postway.bounces.providers import provider_reason
from postway.domain.bounce_reasons import classify_reply, find_status, reason_for

SIZE = 100_000
LIMIT = 30.0

# Runs of each character class the patterns use, and the combinations that met overlapping
# quantifiers (a ">" then spaces, blank lines, "<script" never closed, "=?" never ended, ...).
UNITS = {
    "blank lines": "\n", "crlf lines": "\r\n", "spaces": " ", "tabs": "\t",
    "blank-ish lines": " \n", "quote marks": ">", "quoted blank lines": ">\n",
    "dashes": "-", "dash lines": "-\n", "vertical tabs": "\x0b", "nbsp": "\xa0",
    "letters": "a", "at signs": "a@", "dots": "a.", "digits": "5", "reply codes": "550-",
    "enhanced codes": "5.5.", "lt": "<", "br tags": "<br ", "script tags": "<script>",
    "style tags": "<style ", "transcript in": "<<< ", "transcript out": ">>> ",
    "ellipses": "...", "headers": "x: ", "in reply to": "in reply to ",
    "connected to": "connected to ", "aup codes": "AUP#", "quotes": '"',
    "encoded words": "=?a?q?", "field lines": "Final-Recipient: rfc822; a@b.example\n",
    "verdicts": "550 a@b... ", "host": "host ", "sessions": "while talking to ",
}


def _shape(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def _one_line(text: str) -> bytes:
    """`text` as the base64 body of a report, so its lines survive whatever their length."""
    return (
        b"From: MAILER-DAEMON@mx.example\nTo: fbl@bounces.postway.test\n"
        b"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    ) + base64.encodebytes(text.encode())


def _variants(unit: str) -> Iterator[bytes]:
    body = _shape(unit)
    yield _one_line("Delivery to a@b.example failed:\n" + body)
    yield _one_line(">" + body)  # a quote mark then the run: the `[ \t>]*\s*` overlap
    yield _one_line("<html>" + body).replace(b"text/plain", b"text/html")
    folded = "\n ".join(body[i:i + 900].replace("\n", " ") for i in range(0, len(body), 900))
    yield (
        f"From: x@y.example\nTo: a@b.example\nSubject: {folded}\nX-Failed-Recipients: "
        f"{folded}\nX-PowerMTA-BounceCategory: {folded}\n\nmail delivery failed\n"
    ).encode()
    yield (
        "From: MAILER-DAEMON@mx.example\nSubject: failure\nMIME-Version: 1.0\nContent-Type: "
        'multipart/report; report-type=delivery-status; boundary="B"\n\n--B\n'
        "Content-Type: text/plain\n\nfailed: a@b.example\n--B\n"
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 {body.replace(chr(10), chr(10) + ' ')}\n\n--B--\n"
    ).encode()


def every_entry_point(raw: bytes) -> BounceReport:
    """The public parse and classify functions, each on the hostile text (run in the pool)."""
    text = raw.decode("utf-8", "replace")
    decoded = base64.decodebytes(raw.partition(b"\n\n")[2]).decode("utf-8", "replace") if (
        b"base64" in raw) else text
    msg = parse_message(raw)
    for t in (text, decoded):
        error_text(t)
        smtp_command(t)
        literal_command(t)
        prose_recipients(t, set())
        field_blocks(t)
        addresses(t)
        classify_reply(None, None, t)
        reason_for(None, t)
        find_status(t)
        engine_reason(msg, t, "5.1.1", t)
        provider_reason("a@cox.net", None, t, "5.1.1")
    human_text(msg)
    parse_dsn(msg)
    parse_arf(msg)
    parse_ses(msg, decoded)
    is_auto_reply(msg)
    header(msg, "Subject")
    return parse_bounce(raw)


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsePool]:
    p = ParsePool(workers=2, parser=every_entry_point)
    yield p
    p.close()


@pytest.mark.parametrize("name", list(UNITS))
async def test_hostile_runs_finish_within_the_limit(pool: ParsePool, name: str):
    for raw in _variants(UNITS[name]):
        report = await pool.parse(raw, LIMIT)  # BounceParseTimeout here is the failure
        assert report.kind in ("bounce", "delay", "none", "feedback", "auto-reply", "delivered")


async def test_thousands_of_addresses_finish_within_the_limit(pool: ParsePool):
    listing = "".join(f"<user{i}@host{i % 97}.example>: 550 5.1.1 no such user\n"
                      for i in range(60_000))
    report = await pool.parse(_one_line("Delivery failed:\n" + listing), LIMIT)
    assert report.kind == "bounce" and len(report.results) == 1000  # the first thousand


def test_a_marker_below_dashes_and_blank_lines_still_cuts_there():
    # What the cross-line pattern did, kept by walking back from the marker line.
    text = "550 user unknown\n-----\n\n\n  Original message follows\nFrom: a@b\n"
    assert error_text(text) == "550 user unknown\n"
    assert error_text("550 x\n> >\n\noriginal message follows\n") == "550 x\n"
    assert error_text("550 x\nsee -- here\n\noriginal message follows\n") == (
        "550 x\nsee -- here\n")
    assert error_text("\n\n\noriginal message follows\nx") == "\n\n\noriginal message follows\nx"


def test_text_past_the_cap_is_not_read():
    from postway.bounces.mime import MAX_PART_CHARS

    raw = _one_line("x" * MAX_PART_CHARS + "\n550 5.1.1 <late@b.example>: user unknown\n")
    assert "late@b.example" not in [r.recipient for r in parse_bounce(raw).results]
    early = _one_line("550 5.1.1 <early@b.example>: user unknown\n" + "x" * MAX_PART_CHARS)
    assert [r.recipient for r in parse_bounce(early).results] == ["early@b.example"]
