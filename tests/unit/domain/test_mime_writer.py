"""The direct MIME writer against the `email` package builder it replaced (issue 9).

`reference_build` below is the old body-building code of `message.build_message`, kept here
only as the reference: for random drafts both messages are parsed back and must read the same
(structure, header values, body characters, attachment bytes and names), and the new bytes
must also be wire-safe (CRLF only, lines <= 998, encoded lines <= 76, no bare white space at
the end of a quoted-printable line).
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from postway.domain import mime_writer
from postway.domain.addresses import needs_smtputf8
from postway.domain.header_render import (
    RenderedHeader,
    address_list,
    attachment_disposition,
    mailbox,
    unstructured,
)
from postway.domain.message import (
    Attachment,
    BuiltMessage,
    Draft,
    _addr_spec,
    _Clean,
    _clean,
    build_message,
)
from postway.errors import InvalidInput

DOMAIN = "mail.postway.example"
MID = "<0123456789abcdef0123456789abcdef@mail.postway.example>"

# --- the reference: the email-package builder as it was before the direct writer -------------

_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_NEEDS_QUOTING = re.compile(rb"[\x80-\xff\x00-\x08\x0b-\x1f]")


def _reference_cte(text: str) -> str:
    data = text.encode("utf-8")
    plain = data.isascii() and _CONTROL.search(data) is None
    if plain and all(len(line) <= 78 for line in data.split(b"\n")):
        return "7bit"
    high = len(_NEEDS_QUOTING.findall(data))
    return "quoted-printable" if len(data) + 2 * high <= len(data) * 4 // 3 else "base64"


def _reference_body(msg: MIMEPart, clean: _Clean) -> None:
    if clean.text is not None:
        msg.set_content(
            clean.text, subtype="plain", charset="utf-8", cte=_reference_cte(clean.text)
        )
    if clean.html is not None:
        cte = _reference_cte(clean.html)
        if clean.text is not None:
            msg.add_alternative(clean.html, subtype="html", charset="utf-8", cte=cte)
        else:
            msg.set_content(clean.html, subtype="html", charset="utf-8", cte=cte)
    if clean.text is None and clean.html is None and not clean.attachments:
        msg.set_content("", subtype="plain", charset="utf-8", cte="7bit")
    for filename, maintype, subtype, content in clean.attachments:
        msg.add_attachment(content, maintype=maintype, subtype=subtype)
        part = msg.get_payload()[-1]
        part.replace_header("Content-Disposition", attachment_disposition(filename))


def reference_build(draft: Draft, *, date: datetime, message_id: str) -> BuiltMessage:
    clean = _clean(draft)
    smtputf8 = any(
        needs_smtputf8(a)
        for a in (clean.from_email, *clean.to, *clean.cc, *clean.bcc, clean.reply_to or "x@x")
    )
    msg = MIMEPart(policy=email_policy.SMTPUTF8 if smtputf8 else email_policy.SMTP)
    msg["From"] = mailbox("From", _addr_spec(clean.from_email), clean.from_name)
    if clean.to:
        msg["To"] = address_list("To", [_addr_spec(a) for a in clean.to])
    if clean.cc:
        msg["Cc"] = address_list("Cc", [_addr_spec(a) for a in clean.cc])
    if clean.reply_to:
        msg["Reply-To"] = mailbox("Reply-To", _addr_spec(clean.reply_to), "")
    msg["Subject"] = unstructured("Subject", clean.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = RenderedHeader("Message-ID", [message_id])
    for name, value in clean.headers:
        msg[name] = unstructured(name, value)
    _reference_body(msg, clean)
    msg["MIME-Version"] = "1.0"
    raw = msg.as_bytes()
    return BuiltMessage(raw=raw, message_id=message_id, needs_smtputf8=smtputf8, size=len(raw))


# --- reading messages back ------------------------------------------------------------------


def parse(built: BuiltMessage) -> EmailMessage:
    if built.needs_smtputf8:
        # The stdlib bytes parser does not read RFC 6532 UTF-8 headers; decode them first.
        msg = message_from_string(built.raw.decode("utf-8"), policy=email_policy.default)
    else:
        msg = message_from_bytes(built.raw, policy=email_policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def shape(part: EmailMessage) -> object:
    """Everything a reader gets from a part, boundaries left out (they are random)."""
    headers = []
    for (name, value), (_, raw) in zip(part.items(), part.raw_items(), strict=True):
        if name.lower() == "content-type":
            params = [(k, v) for k, v in part.get_params() or [] if k != "boundary"]
            headers.append((name, str(params)))
        else:  # the decoded value and the field as written, folding included
            headers.append((name, str(value), raw))
    result: dict[str, object] = {
        "headers": headers,
        "defects": [type(d).__name__ for d in part.defects],
        "type": part.get_content_type(),
    }
    if part.is_multipart():
        result["parts"] = [shape(p) for p in part.iter_parts()]  # type: ignore[arg-type]
    else:
        result["disposition"] = part.get_content_disposition()
        result["filename"] = part.get_param("filename", header="content-disposition")
        if part.get_content_maintype() == "text" and part.get_param("charset"):
            result["text"] = part.get_content()  # exact characters, line ends included
        result["bytes"] = part.get_payload(decode=True)
    return result


def assert_wire_safe(built: BuiltMessage) -> None:
    """CRLF line ends only, lines <= 998 octets; encoded body lines <= 76, QP without line-end
    white space (decoders keep it, relays may strip it)."""
    raw = built.raw
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998
    for part in parse(built).walk():
        cte = part.get("Content-Transfer-Encoding", "")
        if part.is_multipart() or cte not in ("quoted-printable", "base64"):
            continue
        payload = part.get_payload()
        assert isinstance(payload, str)
        for line in payload.split("\r\n"):
            assert len(line) <= 76, (cte, line)
            if cte == "quoted-printable":
                assert not line.endswith((" ", "\t")), line


def assert_same_message(draft: Draft, date: datetime) -> BuiltMessage:
    new = build_message(draft, message_id_domain=DOMAIN, date=date, message_id=MID)
    old = reference_build(draft, date=date, message_id=MID)
    assert new.needs_smtputf8 == old.needs_smtputf8
    assert new.size == len(new.raw)
    assert shape(parse(new)) == shape(parse(old))
    assert_wire_safe(new)
    return new


# --- random drafts --------------------------------------------------------------------------

BODY_PIECES = [
    "\r\n",
    "\n",
    "\r",
    " ",
    "\t",
    "  \n",
    "\t\n",
    "=",
    "==",
    "=\n",
    ".",
    ".\n",
    "\n.\n",
    "..",
    "From ",
    "--",
    "===============",
    "=?utf-8?b?eA==?=",
    "é",
    "Grüße",
    "日本語",
    "😀",
    "\x00",
    "\x0c",
    "\x1c",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "x" * 78,
    "y" * 79,
    "z" * 200,
    "a" * 74 + " \n",
    "a" * 75 + " \n",
    "a" * 74 + "\t\n",
    "a" * 73 + "é \n",
    "a" * 72 + "= \n",
]
# Plain ASCII bodies decide between 7bit and quoted-printable by line length alone.
ascii_body = st.lists(
    st.sampled_from(["\n", " \n", "=", ".\n", "x" * 77, "y" * 78, "z" * 79])
    | st.text(st.characters(min_codepoint=32, max_codepoint=126)),
    max_size=12,
).map("".join)
body = ascii_body | st.lists(
    st.sampled_from(BODY_PIECES) | st.text(st.characters(blacklist_categories=("Cs",))),
    max_size=12,
).map("".join)
header_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
display_name = st.sampled_from(["", "Ada Lovelace", 'Lovelace, "Ada"', "Zoë Ørsted", "社長"]) | (
    st.text(header_chars, max_size=60)
)
address = st.sampled_from(
    [
        "bob@example.org",
        "Carol@Example.org",
        "zoe@bücher.example",
        "kim@例子.广告",
        "用户@例子.广告",
        "a.b+c@sub.example.com",
    ]
)
filename = st.sampled_from(["deck.pdf", "Angebot für Köln.pdf", "a" * 200 + ".txt"]) | st.text(
    header_chars, min_size=1, max_size=80
)
content_type = st.sampled_from(
    [
        "application/pdf",
        "text/plain",
        "TEXT/CSV",
        "",
        "message/rfc822",
        "multipart/mixed",
        "image/png",
        "a" * 127 + "/" + "b" * 127,
    ]
)
attachment_bytes = st.binary(max_size=300) | st.sampled_from(
    [b"", b"\r\n", b"=" * 100, bytes(range(256)) * 20, b"--===============x==\r\n"]
)
attachment = st.builds(
    Attachment, filename=filename, content_type=content_type, content=attachment_bytes
)
timezones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
dates = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=timezones
)


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    return Draft(
        from_name=draw(display_name),
        from_email=draw(address),
        to=tuple(draw(st.lists(address, max_size=3))),
        cc=tuple(draw(st.lists(address, max_size=2))),
        bcc=tuple(draw(st.lists(address, max_size=2))),
        subject=draw(st.text(header_chars, max_size=120)),
        text=draw(st.none() | body),
        html=draw(st.none() | body.map(lambda b: f"<html><body><p>{b}</p></body></html>")),
        reply_to=draw(st.none() | address),
        attachments=tuple(draw(st.lists(attachment, max_size=3))),
        signature=draw(st.none() | st.sampled_from(["Ada", "Ada\n<Sales & Co>", " \n"]) | body),
        headers=tuple(
            draw(
                st.lists(
                    st.tuples(st.just("X-Tag"), st.text(header_chars, max_size=80)), max_size=2
                )
            )
        ),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draft=drafts(), date=dates)
@example(
    draft=Draft("Ada", "ada@example.com", ("bob@example.org",), text="é" + "a" * 73 + " \nb\n"),
    date=datetime(2024, 1, 2, tzinfo=UTC),
)
def test_writer_reads_back_like_the_email_package_builder(draft: Draft, date: datetime) -> None:
    try:
        _clean(draft)
    except InvalidInput:
        assume(False)
    assert_same_message(draft, date)


# --- cases worth naming -----------------------------------------------------------------------

BASE = Draft("Ada Lovelace", "ada@example.com", ("bob@example.org",), subject="Hi", text="Hi\n")
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain\n",
        "no final line end",
        "trailing space \nand tab\t\n",
        "Grüße = x \n" + "y" * 100,
        "é" + "a" * 73 + " \n" + "é" + "a" * 73 + "\t",  # QP overrun by the encoded white space
        "日本語" * 40,
        "\n.\n..\nFrom me\n",
        "x" * 78 + "\n" + "y" * 79 + "\n",  # ASCII, but one line too long for 7bit
        "\x0c\x1c\x85\u2028 separators\n",
    ],
)
def test_text_bodies_match_the_reference(text: str) -> None:
    assert_same_message(Draft(**{**BASE.__dict__, "text": text}), WHEN)


def test_full_structure_matches_the_reference() -> None:
    draft = Draft(
        from_name="Zoë Ørsted",
        from_email="zoe@bücher.example",
        to=("bob@example.org", "用户@例子.广告"),
        cc=("carol@example.org",),
        bcc=("secret@example.net",),
        reply_to="replies@example.com",
        subject="Grüße " * 20,
        text="Hello\n",
        html="<html><body><p>Hello</p></body></html>",
        signature="Zoë\n<Sales & Co>",
        attachments=(
            Attachment("Präsentation " * 18 + ".pdf", "application/pdf", bytes(range(256)) * 400),
            Attachment("empty.txt", "text/plain", b""),
            Attachment("fwd.eml", "message/rfc822", b"From: a@b.c\r\n\r\nx\r\n"),
        ),
        headers=(("X-Tag", "=?utf-8?b?eA==?="),),
    )
    new = assert_same_message(draft, WHEN)
    assert new.needs_smtputf8
    assert b"secret@example.net" not in new.raw


def test_quoted_printable_lines_within_76_and_round_trip() -> None:
    for n in range(70, 80):
        for tail in (b" ", b"\t", b"=", b"\xc3\xa9", b"\xc3\xa9 "):
            data = b"a" * n + tail + b"\r\n" + b"b" * n + tail + b"\r\n"
            out = mime_writer.quoted_printable(data)
            lines = out.split(b"\r\n")
            assert lines[-1] == b""
            assert all(len(line) <= 76 and not line.endswith((b" ", b"\t")) for line in lines)
            assert binascii.a2b_qp(out) == data


def test_base64_lines_are_76_characters() -> None:
    data = bytes(range(256)) * 3
    out = mime_writer.base64_lines(data)
    lines = out.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) == 76 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 76
    assert binascii.a2b_base64(out.replace(b"\r\n", b"")) == data
    assert mime_writer.base64_lines(b"") == b""


def test_boundary_found_in_a_part_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["1" * 24, "2" * 24])
    monkeypatch.setattr(mime_writer.secrets, "token_hex", lambda n: next(tokens))
    taken = "===============" + "1" * 24 + "=="
    text = mime_writer.text_entity(f"--{taken}\n--{taken}--\n", "plain")
    html = mime_writer.text_entity("<p>x</p>", "html")
    entity = mime_writer.multipart_entity("alternative", [text, html])
    assert f'boundary="==============={"2" * 24}=="' in entity.headers
    msg = message_from_bytes(
        (entity.headers + "\r\n").encode() + b"".join(entity.body), policy=email_policy.default
    )
    assert isinstance(msg, EmailMessage)
    first, second = msg.iter_parts()
    assert first.get_content() == f"--{taken}\r\n--{taken}--\r\n"  # type: ignore[attr-defined]
    assert second.get_content() == "<p>x</p>\r\n"  # type: ignore[attr-defined]
