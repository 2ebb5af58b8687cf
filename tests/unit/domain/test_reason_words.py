"""Bounce reasons in plain words: right for a person, temporary refusals never called blocks."""

from __future__ import annotations

import pytest

from postway.domain.bounce_reasons import REASONS, classify_reply
from postway.domain.reason_words import SENTENCES, describe


def test_every_reason_has_a_sentence() -> None:
    assert REASONS - {"feedback"} <= set(SENTENCES)
    for reason in REASONS:
        text = describe(reason, False, "5.0.0", "")
        assert text and text[0].isupper() and text.endswith(".")


def test_greylisting_is_described_as_try_again_later_not_as_a_block() -> None:
    reply = "451 4.7.1 Greylisted, please try again later"
    c = classify_reply(451, None, reply)
    text = describe(c.reason, c.hard, c.status, reply)
    assert "try again later" in text and "Postway will retry" in text
    assert "block" not in text.lower()


def test_soft_failure_with_try_again_words_but_no_status_is_temporary() -> None:
    text = describe("blocked", False, None, "Greylisted for 300 seconds")
    assert "try again later" in text


@pytest.mark.parametrize(
    ("reason", "hard", "status", "diagnostic", "wanted"),
    [
        ("blocked", False, "5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] "
         "blocked using zen.spamhaus.org", "allow-list"),
        ("userunknown", True, "5.1.1", "550 5.1.1 User unknown", "Check the address"),
        ("mailboxfull", False, "5.2.2", "552 5.2.2 Mailbox full", "mailbox is full"),
        ("requireptr", False, "5.7.25", "550 5.7.25 no PTR record", "reverse DNS"),
        ("hostunknown", True, "5.1.2", "Host or domain name not found", "after the @"),
    ],
)
def test_each_reason_says_what_happened_and_what_to_do(
    reason: str, hard: bool, status: str, diagnostic: str, wanted: str
) -> None:
    assert wanted in describe(reason, hard, status, diagnostic)


def test_a_permanent_block_stays_a_block_even_when_it_says_try_later() -> None:
    # A 5xx refusal is not retried, whatever its words: describing it as "Postway will retry"
    # would be false.
    text = describe("blocked", False, "5.7.1", "blocked, try again later")
    assert "Postway will retry" not in text


def test_unknown_or_missing_reason_reads_as_no_reason() -> None:
    assert describe(None) == describe("undefined")
    assert describe("no-such-reason") == describe("undefined")
