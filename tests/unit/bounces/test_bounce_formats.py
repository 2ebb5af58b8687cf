"""parse_bounce on hand-written emails of each format family."""

from __future__ import annotations

from pathlib import Path

from postway.bounces import classify_files, parse_bounce

DSN = b"""From: MAILER-DAEMON@mx.example.org
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>:
    Recipient address rejected: User unknown in local recipient table (in reply to
    RCPT TO command)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; bob@example.net
Original-Recipient: rfc822;bob@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected:
    User unknown in local recipient table

Final-Recipient: rfc822; carol@example.net
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

--B
Content-Type: text/rfc822-headers

From: sender@example.com
To: bob@example.net, carol@example.net
Subject: hello

--B--
"""


def test_rfc3464_per_recipient_fields() -> None:
    report = parse_bounce(DSN)
    assert report.kind == "bounce"
    bob, carol = report.results
    assert (bob.recipient, bob.status, bob.reason, bob.hard) == (
        "bob@example.net", "5.1.1", "userunknown", True)
    assert bob.remote_mta == "mx.example.net"
    assert bob.action == "failed"
    assert "User unknown" in bob.diagnostic
    assert (carol.recipient, carol.reason, carol.hard) == (
        "carol@example.net", "mailboxfull", False)


def test_delayed_dsn_is_a_delay_not_a_failure() -> None:
    raw = DSN.replace(b"Action: failed", b"Action: delayed").replace(b"Status: 5.", b"Status: 4.")
    report = parse_bounce(raw)
    assert report.kind == "delay"
    assert [r.action for r in report.results] == ["delayed", "delayed"]
    # `hard` is the reason's property, delay or not (as the reference classifier reports
    # it); that a delay is a warning and never suppresses is apply.py's rule (kind "delay").
    assert [(r.reason, r.hard) for r in report.results] == [
        ("userunknown", True), ("mailboxfull", False)]


SENDMAIL_V5 = b"""From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>
To: sender@example.jp
Subject: Returned mail: User unknown

   ----- Transcript of session follows -----
While talking to a.example.edu:
>>> MAIL From:<sender@example.jp>
<<< 550 Insecure Mail Relay
554 <ann@a.example.edu>... Remote protocol error
550 b.example.org (smtp)... 550 Host unknown
554 <bob@b.example.org>... 550 Host unknown (Authoritative answer from name server)
While talking to c.example.net:
>>> QUIT
<<< 421 c.example.net Sorry, unable to contact destination SMTP daemon.
421 c.example.net (smtp)... Deferred: Connection reset by peer during greeting wait
While talking to d.example.co.jp:
>>> RCPT To:<dan@d.example.co.jp>
<<< 550 Requested User Mailbox not found. No such user here.
550 <dan@d.example.co.jp>... User unknown
421 e.example.com (smtp)... Deferred: Connection timed out during user open

   ----- Unsent message follows -----
From: sender@example.jp
To: ann@a.example.edu
Subject: hello

hi
"""


def test_sendmail_transcript_blocks_end_at_each_recipients_verdict_line() -> None:
    """Each "NNN <addr>... words" line closes its recipient's block: the lines after it lead
    to the next recipient (or to none), so the next one's words never bleed back."""
    report = parse_bounce(SENDMAIL_V5)
    got = {r.recipient: r for r in report.results}
    assert list(got) == ["ann@a.example.edu", "bob@b.example.org", "dan@d.example.co.jp"]
    ann, bob, dan = got.values()
    assert "Insecure Mail Relay" in ann.diagnostic and "Host unknown" not in ann.diagnostic
    assert (ann.reason, ann.hard) == ("norelaying", False)
    assert bob.diagnostic.startswith("550 b.example.org (smtp)... 550 Host unknown")
    assert (bob.reason, bob.hard) == ("hostunknown", True)
    # Of the two sessions before dan's verdict, only the last one is about dan.
    assert dan.diagnostic.startswith("While talking to d.example.co.jp:")
    assert "421" not in dan.diagnostic and "timed out" not in dan.diagnostic
    assert (dan.reason, dan.hard) == ("userunknown", True)


def test_delivered_dsn() -> None:
    raw = DSN.replace(b"Action: failed", b"Action: delivered").replace(b"Status: 5.1.1",
                                                                       b"Status: 2.0.0")
    raw = raw.replace(b"Status: 5.2.2", b"Status: 2.0.0")
    assert parse_bounce(raw).kind == "delivered"


QMAIL = b"""From: MAILER-DAEMON@mx.example.jp
To: sender@example.jp
Subject: failure notice

Hi. This is the qmail-send program at mx.example.jp.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<kijitora@example.net>:
192.0.2.32 does not like recipient.
Remote host said: 550 5.1.1 <kijitora@example.net>... User Unknown
Giving up on 192.0.2.32.

--- Below this line is a copy of the message.

Return-Path: <sender@example.jp>
To: kijitora@example.net
Subject: hi

hello
"""

EXIM = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: sender@example.org
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: a@example.com, b@example.com

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  a@example.com
    SMTP error from remote mail server after RCPT TO:<a@example.com>:
    host mx.example.com [192.0.2.1]: 550 5.1.1 <a@example.com>... User Unknown
  b@example.com
    SMTP error from remote mail server after RCPT TO:<b@example.com>:
    host mx.example.com [192.0.2.1]: 552 5.2.2 <b@example.com>... Mailbox Full

------ This is a copy of the message, including all the headers. ------

From: sender@example.org
To: a@example.com, b@example.com
"""


def test_qmail_prose() -> None:
    report = parse_bounce(QMAIL)
    assert [(r.recipient, r.reason, r.hard) for r in report.results] == [
        ("kijitora@example.net", "userunknown", True)]


def test_exim_prose_keeps_report_order() -> None:
    report = parse_bounce(EXIM)
    assert [(r.recipient, r.reason) for r in report.results] == [
        ("a@example.com", "userunknown"), ("b@example.com", "mailboxfull")]


def test_arf_feedback_report() -> None:
    raw = b"""From: feedback@mail.example.net
To: abuse@example.com
Subject: FW: hello
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="X"

--X
Content-Type: text/plain

This is an email abuse report.
--X
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <kuro@example.net>

--X
Content-Type: text/rfc822-headers

From: sender@example.com
To: kuro@example.net
--X--
"""
    report = parse_bounce(raw)
    assert report.kind == "feedback"
    assert [(r.recipient, r.reason, r.hard) for r in report.results] == [
        ("kuro@example.net", "feedback", False)]


def test_vacation_auto_reply_is_not_a_bounce() -> None:
    raw = (b"From: Bob <bob@example.net>\nTo: sender@example.com\n"
           b"Subject: Automatic reply: hello\nAuto-Submitted: auto-replied\n\n"
           b"I am out of the office until Monday.\n")
    report = parse_bounce(raw)
    assert report.kind == "auto-reply"
    assert report.results[0].reason == "vacation"
    assert report.results[0].hard is False


def test_ordinary_reply_is_none() -> None:
    raw = b"From: bob@example.net\nTo: sender@example.com\nSubject: Re: hello\n\nSounds good!\n"
    assert parse_bounce(raw).kind == "none"


def test_garbage_never_raises() -> None:
    for raw in (b"", b"\x00\xff" * 100, b"Content-Type: multipart/report; boundary=\n\n--",
                b"Subject: =?bogus?Q?x?=\n\n\xe9\xe9"):
        assert parse_bounce(raw).kind in {"bounce", "delay", "auto-reply", "feedback",
                                          "delivered", "none"}


def test_classify_files_rows(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.eml").write_bytes(EXIM)
    (folder / "sub" / "b.eml").write_bytes(b"From: x@example.com\nSubject: hi\n\nhello\n")
    (folder / "ignored.txt").write_bytes(EXIM)
    rows = list(classify_files([folder, tmp_path / "missing.eml"]))
    assert [(Path(r["file"]).name, r["recipient"], r["reason"]) for r in rows] == [
        ("a.eml", "a@example.com", "userunknown"),
        ("a.eml", "b@example.com", "mailboxfull"),
        ("b.eml", None, None),
        ("missing.eml", None, None),
    ]
    assert rows[0]["status"] == "5.1.1" and rows[0]["hard"] is True
    assert "error" in rows[-1]
