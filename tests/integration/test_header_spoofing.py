"""Encoded-words in user text stay text, end to end (issue 7, defect 1).

Through the HTTP API, an identity whose name is an RFC 2047 encoded-word of another sender and a
line break, a subject that encodes new headers and a body, and an attachment whose file name
encodes part headers; the real worker delivers on the managed channel (DKIM-signed) to an SMTP
sink on loopback, and the test reads what the sink received the way a mail reader would.
Before the fix the sink got `From: The CEO <ceo@bigbank.test>` and the injected headers.
"""

from __future__ import annotations

import base64
import email
import re
from email import policy
from email.header import decode_header
from email.message import EmailMessage
from typing import Any

import pytest

from postway.store.identities import mark_verified

SENDER = "rep@acme.example"
LEAD = "lead@client.example"


def b_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


# The review's identity name, and the variant that still spoofed on Python 3.11-3.13.
SPOOF_NAMES = [b_word("The CEO <ceo@bigbank.test>\r\nX-Orig:"), b_word("CEO <ceo@bank.test>")]
SUBJECT = b_word("Hello\r\nX-Injected: 1\r\nBcc: eve@evil.test\r\n\r\nforged body")
FILENAME = b_word('deck.pdf"\r\nX-Part: 1\r\nContent-Type: text/html')
PDF = b"%PDF-1.4 not really"

TOP_HEADERS = [
    "DKIM-Signature",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
    "MIME-Version",
]


def unfolded_field(raw: bytes, name: str) -> str:
    """The one `name` field of the top-level header block, unfolded, as sent on the wire."""
    block = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    values = [
        field.split(":", 1)[1].replace("\r\n", "").strip()
        for field in re.split(r"\r\n(?![ \t])", block)
        if field.split(":", 1)[0].lower() == name.lower()
    ]
    assert len(values) == 1, f"{name} appears {len(values)} times"
    return values[0]


def rfc2047_display_name(raw: bytes) -> str:
    """The From display name decoded per RFC 2047 (adjacent encoded-words join without a space;
    CPython's phrase parser keeps that space, so the name is decoded here)."""
    phrase, addr = re.fullmatch(r"(.*?)\s*<([^<>]*)>", unfolded_field(raw, "From")).groups()
    assert addr == SENDER
    decoded = decode_header(phrase)
    return "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decoded
    )


async def _identity(acct: Any, env: Any, name: str) -> str:
    r = await acct.client.post("/api/v1/identities", json={"name": name, "email": SENDER})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name  # kept as the text typed
    async with env.rt.db.session() as s, s.begin():
        await mark_verified(s, SENDER)  # the admin set-up path; the link flow is tested elsewhere
    return str(r.json()["id"])


@pytest.mark.parametrize("name", SPOOF_NAMES, ids=["ceo-crlf", "ceo-bank"])
async def test_encoded_word_name_subject_and_filename_cannot_spoof_or_inject(
    env: Any, smtp_server: Any, name: str
) -> None:
    sink = await smtp_server()
    env.rt.settings.transport = f"*=127.0.0.1:{sink.port}"
    acct = await env.account(SENDER)
    iid = await _identity(acct, env, name)

    r = await acct.client.post(
        "/api/v1/messages",
        json={
            "identity_id": iid,
            "to": [LEAD],
            "subject": SUBJECT,
            "text": "Hi there",
            "attachments": [
                {
                    "filename": FILENAME,
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(PDF).decode(),
                }
            ],
        },
    )
    assert r.status_code == 202, r.text
    await env.drain()
    status = (await acct.client.get(f"/api/v1/messages/{r.json()['id']}")).json()
    assert [d["state"] for d in status["deliveries"]] == ["delivered"]

    (got,) = sink.received
    assert got.rcpt_tos == [LEAD]  # nothing was added to the envelope either
    raw = got.data
    mail = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)

    # From holds exactly the identity's one address, and its name reads back as typed.
    assert len(mail.get_all("From") or []) == 1
    assert [a.addr_spec for a in mail["From"].addresses] == [SENDER]
    assert rfc2047_display_name(raw) == name
    assert b"bigbank" not in raw and b"bank.test" not in raw

    # No header was injected at the top: the subject is its own text, the body is ours.
    assert list(mail.keys()) == TOP_HEADERS
    assert mail["Subject"] == SUBJECT
    body, attachment = mail.iter_parts()
    assert body.get_content() == "Hi there\r\n"

    # The attachment part has exactly its own headers and its file name as typed.
    assert list(attachment.keys()) == [
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
    ]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == FILENAME
    assert attachment.get_payload(decode=True) == PDF
    assert b"X-Part" not in raw and b"X-Injected" not in raw and b"forged body" not in raw
