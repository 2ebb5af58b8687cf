"""Format- and provider-specific labels decide the reason before the wording heuristics."""

from __future__ import annotations

from postway.bounces.engines import engine_reason
from postway.bounces.formats import literal_command
from postway.bounces.mime import parse_message
from postway.bounces.parse import _whole_reply
from postway.bounces.providers import provider_reason
from postway.domain.bounce_reasons import pseudo_status, reason_for, status_reason

_EMPTY = parse_message(b"Subject: x\n\nbody\n")


def test_provider_codes_decide_by_recipient_domain_or_remote_mta() -> None:
    cox = "550 5.1.0 <a@b.example> sender rejected. AUP#CXBL"
    assert provider_reason("u@cox.net", None, cox, "5.1.0") == "blocked"
    orange = "550 5.5.0 Adresse destinataire invalide. Invalid recipient. LPN007_416"
    assert provider_reason("u@laposte.net", None, orange, "5.5.0") == "userunknown"
    spectrum = "550 5.1.0 sender rejected. AUP#In-1310"
    assert provider_reason("u@charter.net", None, spectrum, "5.1.0") == "toomanyconn"
    # No provider rule for KDDI's "550 : User unknown" (it rested on one email): the
    # general rules read it.
    kddi = "550 : User unknown"
    assert provider_reason("u@ezweb.ne.jp", None, kddi, "5.0.0") == ""
    labs = "550 u@example.org... No such user"
    assert provider_reason("u@example.org", "mail.example.org", labs, "5.0.0",
                           reporter="server-1.bemta-2.messagelabs.com") == "userunknown"
    assert provider_reason("u@example.org", "mx.example.org", cox, "5.1.0") == ""


def test_engine_labels() -> None:
    pmta = "X-PowerMTA-BounceCategory: bad-mailbox"
    assert engine_reason(_EMPTY, "554 delivery error", "5.0.0", pmta) == "userunknown"
    ims = "MSEXCH:IMS:CAT:EXAMPLE 0 (000C05A6) Unknown Recipient"
    assert engine_reason(_EMPTY, ims, None, "") == "userunknown"
    ms = "550 5.4.316 Message expired, connection refused"
    assert engine_reason(_EMPTY, ms, "5.4.316", "") == "expired"
    qmail = "Hi. This is the qmail-send program at mx.\nSorry, I wasn't able to establish an " \
            "SMTP connection. (#4.4.1)"
    assert engine_reason(_EMPTY, qmail, "4.4.1", qmail) == "networkerror"
    assert engine_reason(_EMPTY, qmail.split("\n")[1], "4.4.1", "") == ""


def test_literal_command_ignores_words_and_addresses() -> None:
    assert literal_command("550 5.1.1 unknown user in RCPT") == "RCPT"
    assert literal_command("DATABASE@EXAMPLE.JP refused") is None
    assert literal_command(">>> MAIL From:<a@b> <<< 553 no") == "MAIL"


def test_multiline_reply_is_joined_from_the_transcript() -> None:
    transcript = "<<< 552-5.7.0 This message was blocked because its content\n" \
                 "<<< 552 5.7.0 presents a potential security issue.\n"
    assert "security issue" in _whole_reply("552-5.7.0 This message was blocked", transcript)


def test_first_pass_order_and_status_names() -> None:
    # "Recipient address rejected" is about the recipient: 5.1.1 keeps meaning user unknown.
    text = "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown in local table"
    assert reason_for("5.1.1", text, None) == "userunknown"
    # Without a command, "user unknown" may be a filter after DATA.
    assert reason_for("5.0.0", "550 User unknown", None) == "filtered"
    assert reason_for("5.0.0", "550 User unknown", "RCPT") == "userunknown"
    assert reason_for("4.4.7", "Deferred: Name server: host name lookup failure", None,
                      "failed") == "networkerror"
    assert status_reason("5.0.911") == "userunknown"
    assert pseudo_status("mailboxfull") == "5.0.922"
    assert pseudo_status("userunknown", temporary=True) is None
