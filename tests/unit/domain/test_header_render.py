"""Header rendering: user text becomes only forms that decode back to the same text."""

from __future__ import annotations

import copy
from email import message_from_bytes
from email import policy as email_policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postway.domain.header_render import (
    MAX_LINE,
    RenderedHeader,
    address_list,
    attachment_disposition,
    mailbox,
    unstructured,
)

single_line = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n"),
    max_size=300,
)


def reparse(header: RenderedHeader) -> str:
    """What a reader sees: the field folded by the email package, then parsed back."""
    raw = header.fold(policy=email_policy.SMTP).encode("utf-8") + b"\r\n"
    value = message_from_bytes(raw, policy=email_policy.default)[header.name]
    return str(value)


def test_line_breaks_cannot_be_rendered() -> None:
    with pytest.raises(ValueError, match="line break"):
        RenderedHeader("Subject", ["a\r\nBcc: x@example.com"])


def test_copies_keep_name_and_lines() -> None:
    header = mailbox("From", "ada@example.com", "Zoë Ørsted")
    for clone in (copy.copy(header), copy.deepcopy(header)):
        assert clone.name == "From" and clone.lines == header.lines and clone == header


def test_plain_text_is_written_as_is_and_folded_before_white_space() -> None:
    header = unstructured("Subject", ("Follow-up on pricing " * 6).strip())
    assert header.lines[0].startswith("Follow-up on pricing")
    assert all(line.startswith(" ") for line in header.lines[1:])
    folded = header.fold(policy=email_policy.SMTP)
    assert all(len(line) <= MAX_LINE for line in folded.split("\r\n"))


@pytest.mark.parametrize("text", ["=?utf-8?q?x?=", "Grüße", "a" * 80, "tab\tand=?"])
def test_other_text_is_written_as_encoded_words(text: str) -> None:
    header = unstructured("Subject", text)
    assert all(line.strip().startswith("=?utf-8?b?") for line in header.lines)
    assert reparse(header) == text


def test_mailbox_without_name_is_the_bare_address() -> None:
    assert mailbox("Reply-To", "r@example.com", "").lines == ("r@example.com",)


def test_address_list_folds_after_commas() -> None:
    specs = [f"person{i}@example.org" for i in range(8)]
    header = address_list("To", specs)
    assert len(header.lines) > 1
    assert str(header).replace(" ", "").split(",") == specs


@pytest.mark.parametrize(
    ("filename", "wire"),
    [
        ("deck.pdf", 'attachment; filename="deck.pdf"'),
        ('say "hi".txt', "attachment; filename*=utf-8''say%20%22hi%22.txt"),
        ("=?utf-8?q?a?=.pdf", "attachment; filename*=utf-8''%3D%3Futf-8%3Fq%3Fa%3F%3D.pdf"),
    ],
)
def test_file_name_forms(filename: str, wire: str) -> None:
    assert str(attachment_disposition(filename)) == wire


@given(single_line.map(lambda s: s.strip(" \t")))
def test_unstructured_reads_back_as_given(text: str) -> None:
    header = unstructured("X-Note", text)
    assert reparse(header) == text
    assert all(len(line) <= 998 for line in header.fold(policy=email_policy.SMTP).split("\r\n"))
