"""Hostile input: the parser (strict: an internal exception fails the test) never raises
and its time grows about linearly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postway.bounces.parse import parse_bounce_strict as parse_bounce

KINDS = {"bounce", "delay", "auto-reply", "feedback", "delivered", "none"}
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_line = st.builds(
    lambda name, value: f"{name}: {value}",
    st.sampled_from(["From", "To", "Subject", "Content-Type", "Content-Transfer-Encoding",
                     "X-Failed-Recipients", "Auto-Submitted", "Final-Recipient", "Status",
                     "Action", "Diagnostic-Code", "Received"]),
    st.text(max_size=80),
)
charsets = st.sampled_from(["utf-8", "iso-2022-jp", "bogus-charset", "", "us-ascii", "utf-7",
                            "shift_jis", '"unterminated'])


@_FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes(raw: bytes) -> None:
    assert parse_bounce(raw).kind in KINDS


@_FUZZ
@given(st.lists(header_line, max_size=12), st.text(max_size=2000), charsets,
       st.sampled_from(["base64", "quoted-printable", "8bit", "x-unknown"]))
def test_malformed_single_part(headers: list[str], body: str, charset: str, cte: str) -> None:
    raw = "\n".join(headers) + f"\nContent-Type: text/plain; charset={charset}\n"
    raw += f"Content-Transfer-Encoding: {cte}\n\n{body}"
    assert parse_bounce(raw.encode("utf-8", "surrogateescape")).kind in KINDS


@_FUZZ
@given(st.integers(1, 300), st.sampled_from(["multipart/mixed", "multipart/report",
                                             "message/rfc822"]), st.booleans())
def test_deeply_nested_multiparts(depth: int, ctype: str, truncate: bool) -> None:
    parts = []
    for i in range(depth):
        parts.append(f'Content-Type: {ctype}; boundary="b{i}"\n\n--b{i}\n')
    raw = "From: MAILER-DAEMON@example.org\nSubject: Undelivered\n" + "".join(parts)
    raw += "Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b.example\n"
    raw += "Action: failed\nStatus: 5.1.1\n"
    data = raw.encode()
    if truncate:
        data = data[: len(data) // 2]
    assert parse_bounce(data).kind in KINDS


@_FUZZ
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 3000))
def test_truncated_real_shape(extra: bytes, cut: int) -> None:
    raw = (b"From: MAILER-DAEMON@example.org\nSubject: failure notice\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n--B\n"
           b"Content-Type: text/plain; charset=bogus\n\n<a@example.net>: 550 5.1.1 no\n--B\n"
           b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@example.net\n"
           b"Action: failed\nStatus: 5.1.1\n" + extra)
    assert parse_bounce(raw[:cut]).kind in KINDS


def test_one_megabyte_header() -> None:
    raw = b"From: MAILER-DAEMON@example.org\nSubject: " + b"x" * 1_000_000 + b"\n\nUndelivered\n"
    assert parse_bounce(raw).kind in KINDS
    raw = b"X-Failed-Recipients: " + b"a@example.com, " * 70_000 + b"\n\n550 5.1.1 unknown\n"
    assert parse_bounce(raw).kind in KINDS


def _prose(n: int) -> bytes:
    lines = [f"<user{i}@example.net>: 550 5.1.1 user unknown, host said: nope ({i})"
             for i in range(n)]
    return (b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\n\n"
            + "\n".join(lines).encode())


def _filler(n: int) -> bytes:
    # Long runs of near-matches for the address and phrase patterns.
    return (b"From: MAILER-DAEMON@example.org\nSubject: failure notice\n\n"
            + b"user@ " * n + b"5.1.1." * n + b"<" * n + b"x@y." * n)


def test_pathological_inputs_parse() -> None:
    # Inputs built to trip backtracking regexes, at sizes where quadratic work would run into
    # the suite's timeout. How time grows with size is measured, not asserted, by
    # `bench/bounce_corpus.py --scaling` (tests never assert on timing).
    for build, size in ((_prose, 1_600), (_filler, 80_000)):
        assert parse_bounce(build(size)).kind in KINDS
