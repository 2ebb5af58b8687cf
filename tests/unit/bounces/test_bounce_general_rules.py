"""General causes behind the hard/soft misses of issue 10, each shown on emails written here
(not the corpus files they were found on), so the rule is checked where the words differ."""

from __future__ import annotations

import pytest

from postway.bounces.parse import parse_bounce_strict
from postway.domain.bounce_reasons import decide


def _dsn(explanation: str, status: str, diagnostic: str | None, *, recipients: int = 1,
         extra: str = "") -> bytes:
    blocks = []
    for i in range(recipients):
        lines = [f"Final-Recipient: rfc822; user{i}@example.net", "Action: failed",
                 f"Status: {status}"]
        if diagnostic is not None:
            lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
        if extra:
            lines.append(extra)
        blocks.append("\n".join(lines))
    return (
        "From: MAILER-DAEMON@mx.example.org\nTo: sender@example.org\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{explanation}\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        + "\n\n".join(blocks) + "\n\n--B--\n"
    ).encode()


@pytest.mark.parametrize(("explanation", "reason"), [
    ("Your message was rejected: the recipient's mailbox is over quota.", "mailboxfull"),
    ("Delivery failed: mailbox full.", "mailboxfull"),
    ("The recipient's account has been disabled.", "suspend"),
    ("This mailbox is disabled and does not receive mail.", "suspend"),
])
def test_report_explanation_sharpens_a_catch_all_user_unknown(explanation: str,
                                                              reason: str) -> None:
    """A remote "550 User unknown" is what many servers answer for any refused mailbox; when
    the report's own explanation (RFC 3464 section 2.1) says the mailbox is full or disabled,
    that is the cause, and it is soft (the address exists)."""
    for status, diagnostic in (("5.1.1", "550 5.1.1 <user0@example.net>... User unknown"),
                               ("5.0.0", None)):
        text = explanation + "\n\n<user0@example.net>: 550 user unknown (in reply to RCPT TO)"
        report = parse_bounce_strict(_dsn(text, status, diagnostic))
        (result,) = report.results
        assert (result.reason, result.hard) == (reason, False), (status, result)
        assert result.rule is not None and result.rule.startswith("explained.")


def test_explanation_does_not_decide_for_several_recipients_or_without_unknown_words() -> None:
    """The report's explanation speaks for one recipient only; and it sharpens only a
    catch-all "user unknown", never overrides a specific reply."""
    text = "The recipient's mailbox is over quota."
    many = parse_bounce_strict(_dsn(text, "5.1.1", "550 5.1.1 User unknown", recipients=2))
    assert [r.reason for r in many.results] == ["userunknown", "userunknown"]
    spam = parse_bounce_strict(_dsn(text, "5.7.1", "550 5.7.1 Message rejected as spam"))
    assert spam.results[0].reason == "spamdetected"
    plain = parse_bounce_strict(_dsn("Delivery failed.", "5.1.1", "550 5.1.1 User unknown"))
    assert (plain.results[0].reason, plain.results[0].hard) == ("userunknown", True)


def test_a_status_saying_the_mailbox_exists_outranks_a_bad_mailbox_category() -> None:
    """PowerMTA's bounce category is its own pattern match of the remote's words; RFC 3463
    X.2.1 ("mailbox disabled": the mailbox exists) from the remote server outranks a
    bad-mailbox category, so the bounce is soft. X.1.1 with the same category stays hard."""
    category = "X-PowerMTA-BounceCategory: bad-mailbox"
    disabled = parse_bounce_strict(_dsn("Delivery failed.", "5.2.1",
                                        "550 5.2.1 <user0@example.net>... User Unknown",
                                        extra=category))
    assert (disabled.results[0].reason, disabled.results[0].hard) == ("filtered", False)
    bad = parse_bounce_strict(_dsn("Delivery failed.", "5.1.1",
                                   "550 5.1.1 <user0@example.net>... User Unknown",
                                   extra=category))
    assert (bad.results[0].reason, bad.results[0].hard) == ("userunknown", True)
    no_status = parse_bounce_strict(_dsn("Delivery failed.", "5.0.0", "550 mailbox gone",
                                         extra=category))
    assert (no_status.results[0].reason, no_status.results[0].hard) == ("userunknown", True)


def test_help_desk_address_in_a_prose_report_is_no_recipient() -> None:
    """Postfix's bounce template points to a help desk ("please contact <...>"); that address,
    wherever the report names it again, is not a failed recipient."""
    raw = (b"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
           b"Subject: Undelivered Mail Returned to Sender\nTo: sender@example.org\n\n"
           b"This is the Postfix program at host mx.example.org.\n\n"
           b"For further assistance, please contact <help@isp.example>\n\n"
           b"In Japanese: <help@isp.example>\n\n"
           b"<bob@dest.example>: host mx.dest.example[192.0.2.1] said: 550 5.1.1\n"
           b"    <bob@dest.example>: Recipient address rejected: User unknown (in reply to RCPT"
           b" TO command)\n")
    report = parse_bounce_strict(raw)
    assert [r.recipient for r in report.results] == ["bob@dest.example"]
    assert report.results[0].reason == "userunknown"


def test_explanation_words_alone_never_decide() -> None:
    """`decide` reads the explanation only through rules that also need the diagnostic's
    words, so an explanation with no diagnostic behind it decides nothing."""
    got = decide("5.0.0", "", explanation="mailbox is full")
    assert got.reason in ("onhold", "undefined")
