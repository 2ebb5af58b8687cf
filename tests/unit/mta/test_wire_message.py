"""The DATA block is made once per message (WireMessage) with plain byte replaces; it must
equal what the RFC 5321 rules give line by line, and a prepared message is never re-stuffed."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from postway.mta.smtp_client import WireMessage, data_block

_ENDINGS = re.compile(rb"\r\n|\r|\n")


def reference(message: bytes) -> bytes:
    """RFC 5321 4.5.2 the slow, obvious way: split into lines, double a leading dot."""
    lines = _ENDINGS.split(message)
    if len(lines) > 1 and lines[-1] == b"":
        lines.pop()  # a final line ending ends the last line; an empty message is one line
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + (
        b".\r\n"
    )


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"\xc3\xa9"])))
def test_data_block_equals_the_line_by_line_rules(parts: list[bytes]) -> None:
    message = b"".join(parts)
    assert data_block(message) == reference(message)


def test_a_prepared_message_is_sent_as_prepared() -> None:
    wire = WireMessage.of(b".dot\nline\r\n\xc3\xa9")
    assert wire.payload == b"..dot\r\nline\r\n\xc3\xa9\r\n.\r\n" and wire.eightbit
    # Preparing again (another recipient, a retry) hands back the same bytes, not re-stuffed.
    assert WireMessage.of(wire) is wire
    assert not WireMessage.of(b"plain\n").eightbit
