"""The light MIME splitter builds the tree the standard library's compat32 parser builds."""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postway.bounces.mime_split import split_message

CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"


def _shape(msg: Message) -> tuple[object, ...]:
    """Everything the parser decides about a message, recursively (defects aside)."""
    payload = msg._payload  # noqa: SLF001 - compared as the parser left it
    if isinstance(payload, list):
        body: object = tuple(_shape(p) for p in payload)
    else:
        body = payload
    return (msg.get_unixfrom(), tuple(msg._headers), msg.get_default_type(),  # noqa: SLF001
            msg.preamble, msg.epilogue, body)


def _standard(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def test_same_tree_as_the_standard_parser_on_the_corpus() -> None:
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) > 400
    for path in files:
        raw = path.read_bytes()
        for data in (raw, raw.replace(b"\r\n", b"\n")):
            assert _shape(split_message(data)) == _shape(_standard(data)), path.name


_LINES = st.sampled_from([
    "--b\n", "--b--\n", "--b  \n", "--b--", "--b", "--bx\n", "--c\n", "--c--\n", "\n", "\r",
    "\r\n", "text line\n", "From nobody\n", "From: a@b.example\n", ": no name\n",
    " continued\n", "\tcontinued\n", "Content-Type: multipart/mixed; boundary=c\n",
    "Content-Type: multipart/digest; boundary=c\n", "Content-Type: message/rfc822\n",
    "Content-Type: message/delivery-status\n", "Content-Type: text/plain\n",
    "Content-Type: multipart/alternative\n", "Final-Recipient: rfc822; a@b.example\n",
    "Status: 5.1.1\n", "no colon here\n", "x\ry\n", "Content-Transfer-Encoding: base64\n",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["multipart/mixed", "multipart/report", "multipart/digest",
                        "message/rfc822", "message/delivery-status", "text/plain"]),
       st.lists(_LINES, max_size=60), st.booleans())
def test_same_tree_on_generated_messages(ctype: str, lines: list[str], crlf: bool) -> None:
    text = f"From: x@y.example\nContent-Type: {ctype}; boundary=b\n\n" + "".join(lines)
    raw = text.encode()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    assert _shape(split_message(raw)) == _shape(_standard(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_same_tree_on_random_bytes(raw: bytes) -> None:
    assert _shape(split_message(raw)) == _shape(_standard(raw))


def test_nesting_past_the_cap_is_text_not_recursion() -> None:
    parts = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'
                    for i in range(5000))
    msg = split_message(("Subject: deep\n" + parts).encode())
    depth = 0
    while isinstance(msg.get_payload(), list):
        msg = msg.get_payload()[0]
        depth += 1
    assert depth == 100 and isinstance(msg.get_payload(), str)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list("Fromx :\t-é\x7f!~9;\n") + ["From "]), min_size=1,
                max_size=12))
def test_header_line_test_is_the_standard_pattern(pieces: list[str]) -> None:
    from postway.bounces.mime_split import _HEADER_RE, _is_header_line

    line = "".join(pieces)
    assert _is_header_line(line) == bool(_HEADER_RE.match(line))
