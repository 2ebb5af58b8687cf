"""The SMTP-reply classifier: same words, same reason, wherever they were met."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postway.domain.bounce_reasons import (
    REASONS,
    ReplyClass,
    classify_reply,
    find_status,
    is_hard,
    status_reason,
)


@pytest.mark.parametrize(
    ("code", "status", "text", "reason", "hard"),
    [
        (
            550,
            "5.1.1",
            "<bob@example.com>: Recipient address rejected: User unknown",
            "userunknown",
            True,
        ),
        (552, None, "5.2.2 Mailbox full", "mailboxfull", False),
        (550, None, "5.1.2 Host or domain name not found", "hostunknown", True),
        (
            554,
            None,
            "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "blocked",
            False,
        ),
        (
            550,
            None,
            "5.7.26 Unauthenticated email from example.jp is not accepted due to domain's "
            "DMARC policy",
            "authfailure",
            False,
        ),
        (552, None, "5.3.4 Message size exceeds fixed maximum message size", "mesgtoobig", False),
        (554, None, "5.7.1 <bob@example.org>: Relay access denied", "norelaying", False),
        (550, "5.1.6", "recipient no longer on server", "hasmoved", True),
        (
            550,
            None,
            "5.2.1 The email account that you tried to reach is disabled",
            "suspend",
            False,
        ),
        (421, None, "4.7.0 Too many concurrent connections from this IP", "toomanyconn", False),
        (554, None, "5.7.1 Message rejected as spam by Content Filtering", "spamdetected", False),
        (550, None, "Virus found in message", "virusdetected", False),
    ],
)
def test_classify_reply_known_replies(
    code: int, status: str | None, text: str, reason: str, hard: bool
) -> None:
    got = classify_reply(code, status, text)
    assert got.reason == reason
    assert got.hard is hard


def test_status_is_taken_from_text_then_from_code() -> None:
    assert classify_reply(550, None, "5.1.1 no such user").status == "5.1.1"
    assert classify_reply(550, None, "no such user").status == "5.0.0"
    assert classify_reply(451, None, "try later").status == "4.0.0"
    assert classify_reply(None, None, "").status is None


def test_command_decides_what_unknown_user_means() -> None:
    assert classify_reply(550, None, "User unknown", command="RCPT").reason == "userunknown"
    assert classify_reply(550, None, "User unknown", command="DATA").reason == "filtered"
    assert classify_reply(550, None, "Sender unknown", command="MAIL").reason == "rejected"


def test_temporary_reply_is_never_hard() -> None:
    got = classify_reply(450, None, "4.1.1 mailbox unavailable: user unknown", command="RCPT")
    assert got.reason == "userunknown"
    assert got.hard is False


def test_address_local_parts_do_not_decide_the_reason() -> None:
    got = classify_reply(554, None, "5.3.0 <mailererror@example.net>: Mailer error")
    assert got.reason == "mailererror"


def test_find_status_skips_ip_addresses_and_prefers_specific_codes() -> None:
    assert find_status("host 192.0.2.153 said 550 5.1.1 nope") == "5.1.1"
    assert find_status("5.0.0 blah 5.2.2 full") == "5.2.2"
    assert find_status("Exim 4.92 said hello") is None


def test_hard_rules() -> None:
    assert is_hard("userunknown") and is_hard("hostunknown") and is_hard("hasmoved")
    assert is_hard("notaccept", "5.1.10") and not is_hard("notaccept", "4.0.0")
    assert not is_hard("mailboxfull") and not is_hard("blocked")
    assert status_reason("5.2.2") == "mailboxfull"
    assert status_reason("4.2.1") == "blocked"


def test_reply_class_is_frozen() -> None:
    c = ReplyClass("userunknown", True, "5.1.1")
    with pytest.raises(AttributeError):
        c.reason = "x"  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.integers(-1000, 1000)),
    st.one_of(st.none(), st.text(max_size=12)),
    st.text(max_size=400),
)
def test_classify_reply_never_raises(code: int | None, status: str | None, text: str) -> None:
    got = classify_reply(code, status, text)
    assert got.reason in REASONS


def test_malformed_name_server_reply_is_a_network_error_whatever_the_record_type() -> None:
    """Postfix prints "Malformed or unexpected name server reply" for any malformed DNS
    answer (its documented DNS-error text), MX or not: a network error, soft. A real null MX
    is said in its own words (RFC 7505), and 5.4.4 with host-not-found words is hostunknown."""
    for rtype in ("MX", "A"):
        text = (f"Name service error for name=example.org type={rtype}: Malformed or "
                "unexpected name server reply")
        got = classify_reply(550, "5.4.4", text)
        assert (got.reason, got.hard) == ("networkerror", False)
    null_mx = "550 5.1.10 Recipient address rejected: Domain example.org does not accept mail"
    assert classify_reply(550, None, null_mx).reason == "notaccept"
    unknown = ("Host or domain name not found. Name service error for name=x.example"
               " type=AAAA: Host not found")
    assert classify_reply(550, "5.4.4", unknown).reason == "hostunknown"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["@", "<", ">", "a", "b.c", " ", "\n", "x" * 70, "-", "é",
                                 "user", "example.org", ",", "@@"]), max_size=80))
def test_address_blanking_is_the_plain_substitution(pieces: list[str]) -> None:
    """The search that starts near each "@" replaces what the plain pass replaces."""
    from postway.domain.bounce_reasons import _ADDRESS_RE, _blank_addresses

    text = "".join(pieces)
    assert _blank_addresses(text) == _ADDRESS_RE.sub(" <address> ", text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["", "5.1.1", "4.2.1", "5.2.1", "5.7.1", "5.7.26", "5.0.0", "4.4.7",
                        "5.4.4", "5.1.10", "5.2.2", "4.7.0", "5.5.3", "5.6.0"]),
       st.lists(st.sampled_from(["user unknown", "mailbox full", "spam", "relay access denied",
                                 "blocked", "<address> :", "550 ", "dmarc policy", "ptr record",
                                 "message too large", "try again later", "no such domain"]),
                max_size=4),
       st.sampled_from([None, "RCPT", "MAIL", "DATA", "HELO", "CONN"]),
       st.sampled_from(["", "failed", "delayed"]), st.sampled_from(["", "smtp", "x-unix"]),
       st.sampled_from(["", "userunknown", "hostunknown", "spamdetected"]),
       st.sampled_from([None, 550, 421, 501]))
def test_rules_ruled_out_by_the_facts_never_decide(status: str, words: list[str],
                                                   command: str | None, action: str,
                                                   dtype: str, label: str,
                                                   reply: int | None) -> None:
    """first_rule tries only the rules the status, command, action, type and label leave
    possible: the same decision as trying every rule in order."""
    from postway.domain.bounce_reasons import status_reason
    from postway.domain.bounce_rules import RULES, Decision, Facts, first_rule, holds

    named = status_reason(status)
    text = " ".join(words)
    def facts() -> Facts:
        return Facts(status, named, text, command, action, dtype, label, reply)
    expected = None
    f = facts()
    for rule in RULES:
        evidence = holds(rule, f)
        reason = rule.reason or (f.label if rule.label else named) if evidence else ""
        if evidence is not None and reason:
            expected = Decision(reason, rule.id, rule.source, evidence)
            break
    assert first_rule(facts(), named) == expected
