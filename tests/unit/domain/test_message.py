"""Message building: structure, encodings, injection refusal; checked by parsing the bytes back."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from postway.domain.message import (
    Attachment,
    BuiltMessage,
    Draft,
    build_message,
    envelope_recipients,
    new_message_id,
    validate_draft,
)
from postway.errors import InvalidInput

DOMAIN = "mail.postway.example"
BASE = Draft(
    from_name="Ada Lovelace",
    from_email="ada@example.com",
    to=("bob@example.org",),
    subject="Quick question",
    text="Hi Bob,\n\nDo you have ten minutes this week?\n",
)


def build(draft: Draft = BASE, **kwargs: object) -> BuiltMessage:
    return build_message(draft, message_id_domain=DOMAIN, **kwargs)  # type: ignore[arg-type]


def parse(built: BuiltMessage) -> EmailMessage:
    if built.needs_smtputf8:
        # The stdlib bytes parser does not read RFC 6532 UTF-8 headers; decode them first.
        msg = message_from_string(built.raw.decode("utf-8"), policy=email_policy.default)
    else:
        msg = message_from_bytes(built.raw, policy=email_policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def content(part: EmailMessage) -> str:
    """Decoded text of a part with line ends as LF (the parser keeps the wire's CRLF)."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def assert_wire_safe(raw: bytes) -> None:
    """Only CRLF line ends (no bare CR/LF: SMTP smuggling), no NUL, lines within RFC 5322."""
    assert b"\x00" not in raw
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998


# --- structure ------------------------------------------------------------------------------


def test_text_only_message() -> None:
    built = build()
    msg = parse(built)
    assert msg.get_content_type() == "text/plain"
    assert msg["From"] == "Ada Lovelace <ada@example.com>"
    assert msg["To"] == "bob@example.org"
    assert msg["Subject"] == "Quick question"
    assert msg["MIME-Version"] == "1.0"
    assert content(msg) == BASE.text
    assert msg["Cc"] is None and msg["Reply-To"] is None
    assert not built.needs_smtputf8
    assert built.size == len(built.raw)
    assert_wire_safe(built.raw)


def test_html_only_message() -> None:
    msg = parse(build(replace(BASE, text=None, html="<p>Hi <b>Bob</b></p>")))
    assert msg.get_content_type() == "text/html"
    assert content(msg) == "<p>Hi <b>Bob</b></p>\n"


def test_text_and_html_make_multipart_alternative() -> None:
    msg = parse(build(replace(BASE, html="<p>Hi Bob</p>")))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert content(parts[0]) == BASE.text
    assert content(parts[1]) == "<p>Hi Bob</p>\n"


def test_attachments_make_multipart_mixed_and_bytes_round_trip() -> None:
    pdf = bytes(range(256)) * 50
    draft = replace(
        BASE,
        html="<p>Hi</p>",
        attachments=(
            Attachment("deck.pdf", "application/PDF", pdf),
            Attachment("notes.txt", "", b"plain\r\nnotes"),
        ),
    )
    msg = parse(build(draft))
    assert msg.get_content_type() == "multipart/mixed"
    body, *atts = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [a.get_filename() for a in atts] == ["deck.pdf", "notes.txt"]
    assert [a.get_content_type() for a in atts] == ["application/pdf", "application/octet-stream"]
    assert atts[0].get_payload(decode=True) == pdf
    assert atts[1].get_payload(decode=True) == b"plain\r\nnotes"
    assert all(a.get_content_disposition() == "attachment" for a in atts)


def test_attachment_only_message() -> None:
    draft = replace(BASE, text=None, attachments=(Attachment("a.csv", "text/csv", b"a,b\n1,2\n"),))
    msg = parse(build(draft))
    assert msg.get_content_type() == "multipart/mixed"
    (att,) = msg.iter_parts()
    assert att.get_payload(decode=True) == b"a,b\n1,2\n"


def test_forwarded_message_attachment_is_sent_as_opaque_bytes() -> None:
    eml = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    draft = replace(BASE, attachments=(Attachment("fwd.eml", "message/rfc822", eml),))
    (_, att) = parse(build(draft)).iter_parts()
    assert att.get_content_type() == "application/octet-stream"
    assert att.get_payload(decode=True) == eml


def test_subject_only_message_is_allowed() -> None:
    msg = parse(build(replace(BASE, text=None, subject="Call me")))
    assert msg["Subject"] == "Call me"
    assert msg.get_content_type() == "text/plain"


def test_empty_message_is_refused() -> None:
    with pytest.raises(InvalidInput, match="the message is empty") as info:
        build(replace(BASE, text=None, subject="  "))
    assert info.value.field == "text"


def test_recipients_required() -> None:
    with pytest.raises(InvalidInput) as info:
        build(replace(BASE, to=()))
    assert info.value.field == "to"
    msg = parse(build(replace(BASE, to=(), bcc=("hidden@example.org",))))
    assert msg["To"] is None and msg["Bcc"] is None


def test_bare_string_recipient_list_is_refused() -> None:
    with pytest.raises(InvalidInput, match="expected a list"):
        build(replace(BASE, to="bob@example.org"))  # type: ignore[arg-type]


# --- headers --------------------------------------------------------------------------------


def test_bcc_never_in_headers() -> None:
    draft = replace(BASE, cc=("carol@example.org",), bcc=("secret@example.net", "boss@example.net"))
    built = build(draft)
    msg = parse(built)
    assert msg["Bcc"] is None
    assert b"secret@example.net" not in built.raw
    assert b"boss@example.net" not in built.raw
    assert msg["Cc"] == "carol@example.org"


def test_multiple_recipients_and_reply_to() -> None:
    draft = replace(
        BASE,
        to=("bob@example.org", " Carol@Example.org "),
        cc=("dan@example.org",),
        reply_to="replies@example.com",
    )
    msg = parse(build(draft))
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org", "Carol@example.org"]
    assert msg["Reply-To"] == "replies@example.com"


def test_from_without_display_name() -> None:
    msg = parse(build(replace(BASE, from_name="")))
    assert msg["From"] == "ada@example.com"


def test_display_name_with_specials_is_quoted() -> None:
    msg = parse(build(replace(BASE, from_name='Lovelace, Ada "The Countess"')))
    (addr,) = msg["From"].addresses
    assert addr.display_name == 'Lovelace, Ada "The Countess"'
    assert addr.addr_spec == "ada@example.com"


def test_non_ascii_subject_and_name_are_rfc2047_encoded() -> None:
    built = build(replace(BASE, from_name="Zoë Ørsted", subject="Grüße aus Köln ☕"))
    header_block = built.raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert re.search(rb"^Subject: =\?utf-8\?[qb]\?", header_block, re.M)
    assert re.search(rb"^From: =\?utf-8\?[qb]\?.*\?= <ada@example.com>\r?$", header_block, re.M)
    msg = parse(built)
    assert msg["Subject"] == "Grüße aus Köln ☕"
    assert msg["From"].addresses[0].display_name == "Zoë Ørsted"


def test_long_subject_is_folded_and_round_trips() -> None:
    subject = "Follow-up on our conversation about pricing " * 15
    built = build(replace(BASE, subject=subject))
    assert_wire_safe(built.raw)
    assert parse(built)["Subject"] == subject.strip()


def test_idn_domains_use_ascii_form_in_headers() -> None:
    built = build(replace(BASE, from_email="zoe@bücher.example", to=("kim@例子.广告",)))
    assert not built.needs_smtputf8
    msg = parse(built)
    assert msg["From"].addresses[0].domain == "xn--bcher-kva.example"
    assert msg["To"].addresses[0].domain == "xn--fsqu00a.xn--4rr70v"
    assert built.raw.split(b"\r\n\r\n", 1)[0].isascii()


def test_non_ascii_local_part_needs_smtputf8() -> None:
    built = build(replace(BASE, to=("用户@例子.广告",), subject="你好"))
    assert built.needs_smtputf8
    msg = parse(built)
    assert msg["To"].addresses[0].username == "用户"
    assert msg["Subject"] == "你好"
    assert_wire_safe(built.raw)
    # A Bcc recipient alone also makes the SMTP transaction need SMTPUTF8.
    assert build(replace(BASE, bcc=("用户@example.org",))).needs_smtputf8


def test_non_ascii_filename_is_rfc2231_encoded() -> None:
    draft = replace(
        BASE, attachments=(Attachment("Angebot für Köln.pdf", "application/pdf", b"%PDF"),)
    )
    built = build(draft)
    assert b"filename*=utf-8''Angebot%20f%C3%BCr%20K%C3%B6ln.pdf" in built.raw
    (_, att) = parse(built).iter_parts()
    assert att.get_filename() == "Angebot für Köln.pdf"


def test_message_id_and_date() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    built = build(date=when)
    assert re.fullmatch(r"<[0-9a-f]{32}@mail\.postway\.example>", built.message_id)
    msg = parse(built)
    assert msg["Message-ID"] == built.message_id
    assert msg["Date"].datetime == when
    assert build().message_id != built.message_id


def test_naive_date_is_utc() -> None:
    msg = parse(build(date=datetime(2024, 1, 2, 3, 4, 5)))
    assert msg["Date"].datetime == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_given_message_id_is_used_with_or_without_brackets() -> None:
    assert build(message_id="<abc.1@host.example>").message_id == "<abc.1@host.example>"
    assert build(message_id="abc.1@host.example").message_id == "<abc.1@host.example>"
    with pytest.raises(InvalidInput) as info:
        build(message_id="<abc\r\nBcc: x@y.com@host>")
    assert info.value.field == "message_id"


def test_new_message_id_idn_domain() -> None:
    assert new_message_id("Bücher.example").endswith("@xn--bcher-kva.example>")
    with pytest.raises(InvalidInput) as info:
        new_message_id("bad domain\r\n")
    assert info.value.field == "message_id_domain"


def test_extra_headers() -> None:
    draft = replace(
        BASE,
        headers=(
            ("X-Postway-Message", "msg_123"),
            ("List-Unsubscribe", "<https://example.com/u/1>"),
            ("In-Reply-To", "<prev@example.com>"),
        ),
    )
    msg = parse(build(draft))
    assert msg["X-Postway-Message"] == "msg_123"
    assert msg["List-Unsubscribe"] == "<https://example.com/u/1>"
    assert msg["In-Reply-To"] == "<prev@example.com>"


@pytest.mark.parametrize(
    "header",
    [
        ("Bcc", "x@example.com"),
        ("From", "x@example.com"),
        ("Content-Type", "text/html"),
        ("X Bad", "v"),
        ("X-Bad:", "v"),
        ("", "v"),
        ("Received", "from evil"),
    ],
)
def test_unsafe_extra_headers_refused(header: tuple[str, str]) -> None:
    with pytest.raises(InvalidInput) as info:
        build(replace(BASE, headers=(header,)))
    assert info.value.field == "headers[0]"


# --- bodies and signature -------------------------------------------------------------------


def test_body_line_endings_normalized_to_crlf() -> None:
    built = build(replace(BASE, text="one\rtwo\r\nthree\nfour"))
    assert_wire_safe(built.raw)
    assert content(parse(built)) == "one\ntwo\nthree\nfour\n"


def test_smtp_smuggling_sequences_in_body_are_harmless() -> None:
    built = build(replace(BASE, text="a\n.\nb\r.\rc\r\n.\r\nMAIL FROM:<x@y.com>"))
    assert_wire_safe(built.raw)
    assert b"\n.\r\n" not in built.raw.replace(b"\r\n.\r\n", b"")


def test_long_and_non_ascii_bodies_are_7bit_safe() -> None:
    for text in ("x" * 5000, "Grüße\n" * 10, "日本語のテキスト" * 100, "nul\x00 and \x0c feed"):
        built = build(replace(BASE, text=text))
        assert_wire_safe(built.raw)
        assert built.raw.isascii()
        assert content(parse(built)) == (text if text.endswith("\n") else text + "\n")


def test_signature_appended_to_text_and_html() -> None:
    draft = replace(
        BASE,
        html="<html><body><p>Hi Bob</p></body></html>",
        signature="Ada Lovelace\nHead of Sales <Analytical Engines & Co>",
    )
    text_part, html_part = parse(build(draft)).iter_parts()
    text = content(text_part)
    assert text.endswith("\n\n-- \nAda Lovelace\nHead of Sales <Analytical Engines & Co>\n")
    html = content(html_part)
    assert "Ada Lovelace<br>\nHead of Sales &lt;Analytical Engines &amp; Co&gt;</div>" in html
    assert html.rstrip().endswith("</body></html>")  # the block is inside the body


def test_signature_alone_becomes_text_body() -> None:
    msg = parse(build(replace(BASE, text=None, signature="Ada")))
    assert content(msg) == "-- \nAda\n"


# --- injection refused in every field -------------------------------------------------------

INJECT = "x\r\nBcc: eve@evil.example"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"from_name": INJECT}, "from_name"),
        ({"from_email": "ada@example.com\r\nBcc: eve@evil.example"}, "from_email"),
        ({"to": ("bob@example.org\nBcc: eve@evil.example",)}, "to[0]"),
        ({"to": ("bob@example.org", "eve@evil.example\r")}, "to[1]"),
        ({"cc": ("carol@example.org\r\n",)}, "cc[0]"),
        ({"bcc": ("\x00dan@example.org",)}, "bcc[0]"),
        ({"subject": INJECT}, "subject"),
        ({"subject": "a\u2028b"}, "subject"),
        ({"reply_to": "r@example.com\nX-Evil: 1"}, "reply_to"),
        ({"attachments": (Attachment(INJECT, "text/plain", b""),)}, "attachments[0].filename"),
        (
            {"attachments": (Attachment("a.txt", "text/plain\r\nX-Evil: 1", b""),)},
            "attachments[0].content_type",
        ),
        ({"headers": (("X-Postway-Message", INJECT),)}, "headers[0].value"),
        ({"headers": (("X-Evil\r\nBcc", "v"),)}, "headers[0]"),
    ],
)
def test_injection_refused_in_every_field(change: dict[str, object], field: str) -> None:
    draft = replace(BASE, **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        validate_draft(draft)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    with pytest.raises(InvalidInput):
        build(draft)


@pytest.mark.parametrize(
    "content_type", ["pdf", "application/", "text/plain; charset=utf-8", "a/b/c", "ä/b"]
)
def test_bad_content_type_refused(content_type: str) -> None:
    with pytest.raises(InvalidInput, match="is not a media type"):
        validate_draft(replace(BASE, attachments=(Attachment("a", content_type, b""),)))


@pytest.mark.parametrize("filename", ["reports/q3.pdf", "C:\\tmp\\q3.pdf", "<q3.pdf>"])
def test_path_like_filename_refused(filename: str) -> None:
    with pytest.raises(InvalidInput, match="plain file name") as info:
        validate_draft(replace(BASE, attachments=(Attachment(filename, "text/plain", b""),)))
    assert info.value.field == "attachments[0].filename"


def test_empty_filename_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_draft(replace(BASE, attachments=(Attachment(" ", "text/plain", b""),)))
    assert info.value.field == "attachments[0].filename"


def test_validate_draft_accepts_good_draft() -> None:
    validate_draft(BASE)


def test_envelope_recipients_dedupes_and_includes_bcc() -> None:
    draft = replace(
        BASE,
        to=("bob@example.org", "carol@example.org"),
        cc=("bob@EXAMPLE.org",),
        bcc=("dan@bücher.example", "dan@xn--bcher-kva.example"),
    )
    assert envelope_recipients(draft) == (
        "bob@example.org",
        "carol@example.org",
        "dan@bücher.example",
    )


# --- properties -----------------------------------------------------------------------------

# Body text as users type it; "\r" is excluded because line ends are normalized to "\n".
body_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"))
header_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n"),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(subject=header_text, text=body_text, html=st.none() | body_text)
def test_any_subject_and_body_round_trip(subject: str, text: str, html: str | None) -> None:
    built = build(replace(BASE, subject=subject, text=text, html=html))
    assert_wire_safe(built.raw)
    msg = parse(built)
    assert msg["Subject"] == subject.strip(" \t")
    bodies = [msg] if html is None else list(msg.iter_parts())
    expected = [text] if html is None else [text, html]
    for part, original in zip(bodies, expected, strict=True):
        got = content(part)
        assert got == original + "\n" or (original.endswith("\n") and got == original)


valid_address = st.sampled_from(
    ["bob@example.org", "zoe@bücher.example", "用户@例子.广告", "a.b+c@sub.example.com"]
)
any_address = valid_address | st.text(max_size=40) | st.emails()
any_text = st.text(st.characters(), max_size=200)  # includes surrogates and control chars
maybe_text = st.none() | any_text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    from_name=any_text,
    from_email=any_address,
    to=st.lists(any_address, max_size=3).map(tuple),
    cc=st.lists(any_address, max_size=2).map(tuple),
    bcc=st.lists(any_address, max_size=2).map(tuple),
    subject=any_text,
    text=maybe_text,
    html=maybe_text,
    reply_to=st.none() | any_address,
    signature=maybe_text,
    attachments=st.lists(
        st.builds(Attachment, filename=any_text, content_type=any_text, content=st.binary()),
        max_size=2,
    ).map(tuple),
    headers=st.lists(st.tuples(any_text | st.just("X-Tag"), any_text), max_size=2).map(tuple),
)
def test_build_message_raises_only_invalid_input(**fields: object) -> None:
    draft = Draft(**fields)  # type: ignore[arg-type]
    try:
        built = build(draft)
    except InvalidInput as exc:
        assert exc.field
        return
    assert_wire_safe(built.raw)
    assert parse(built)["Message-ID"] == built.message_id


# --- encoded-words in user text stay text (issue 7, defect 1) ---------------------------------
#
# The email package decodes RFC 2047 encoded-words while it writes headers, so a name typed as
# "=?utf-8?b?...?=" used to come out as another From address, a new header or a new body.
# Every check below reads the bytes back the way a receiving program does.

FROM = "ada@example.com"
ADDRESSING = ["From", "To", "Subject", "Date", "Message-ID"]
TEXT_ONLY = [*ADDRESSING, "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
PART_HEADERS = ["Content-Type", "Content-Transfer-Encoding", "Content-Disposition"]


def b_word(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


def q_word(text: str, charset: str = "utf-8") -> str:
    out = []
    for byte in text.encode(charset):
        ch = chr(byte)
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append("_" if ch == " " else f"={byte:02X}")
    return f"=?{charset}?q?{''.join(out)}?="


SPOOF_NAMES = [
    b_word("The CEO <ceo@bigbank.test>\r\nX-Orig:"),  # the review's identity name
    b_word("CEO <ceo@bank.test>"),  # the variant that still spoofs on Python 3.13
    q_word("CEO <ceo@bank.test>"),
    "=?UTF-8?B?" + base64.b64encode(b"a@evil.test, b@evil.test").decode() + "?=",
    f"Ada {b_word('<ceo@bank.test>')} Lovelace",
]


def raw_field(raw: bytes, name: str) -> str:
    """The unfolded value of the one top-level `name` field, read straight off the wire."""
    block = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    values = [
        field.split(":", 1)[1].replace("\r\n", "").lstrip(" ")
        for field in re.split(r"\r\n(?![ \t])", block)
        if field.split(":", 1)[0].lower() == name.lower()
    ]
    assert len(values) == 1, f"{name} appears {len(values)} times"
    return values[0]


def sent_display_name(raw: bytes) -> str:
    """RFC 2047/5322 reading of the From display name, strict about the forms Postway writes.

    Independent of CPython's parser, which keeps the folding space between two adjacent
    encoded-words of a phrase (RFC 2047 section 6.2 says to drop it).
    """
    value = raw_field(raw, "From")
    m = re.fullmatch(r"(.*?)\s*<([^<>]*)>", value)
    if m is None:
        assert value == FROM
        return ""
    phrase, addr = m.groups()
    assert addr == FROM
    if phrase.startswith('"'):
        assert re.fullmatch(r'"(?:[^"\\]|\\.)*"', phrase), phrase
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    words = re.fullmatch(r"(?:=\?utf-8\?b\?[A-Za-z0-9+/=]*\?=\s*)+", phrase)
    assert words, f"From phrase is neither a quoted-string nor Postway's encoded-words: {phrase}"
    data = b"".join(base64.b64decode(w) for w in re.findall(r"\?b\?([^?]*)\?=", phrase))
    return data.decode("utf-8")


def assert_one_from(built: BuiltMessage, msg: EmailMessage, name: str) -> None:
    """From holds exactly the identity's address, and its name reads back as typed."""
    assert len(msg.get_all("From") or []) == 1
    addresses = msg["From"].addresses
    assert [a.addr_spec for a in addresses] == [FROM]
    assert not msg["From"].defects
    assert sent_display_name(built.raw) == name
    shown = addresses[0].display_name
    several_words = len(re.findall(r"=\?utf-8\?b\?", raw_field(built.raw, "From"))) > 1
    assert shown == name or (several_words and shown.replace(" ", "") == name.replace(" ", ""))


@pytest.mark.parametrize("name", SPOOF_NAMES)
def test_encoded_word_in_from_name_cannot_change_the_from_address(name: str) -> None:
    built = build(replace(BASE, from_name=name))
    msg = parse(built)
    assert_one_from(built, msg, name)
    assert list(msg.keys()) == TEXT_ONLY
    assert b"bigbank" not in built.raw and b"bank.test" not in built.raw
    assert msg["X-Orig"] is None


def test_ascii_display_name_is_a_quoted_string() -> None:
    name = 'Ada "Countess" \\ Lovelace, CEO'
    built = build(replace(BASE, from_name=name))
    quoted = '"Ada \\"Countess\\" \\\\ Lovelace, CEO"'
    assert raw_field(built.raw, "From") == f"{quoted} <ada@example.com>"
    assert_one_from(built, parse(built), name)


def test_encoded_word_in_subject_cannot_inject_headers_or_body() -> None:
    subject = b_word("hi\r\nX-Injected: 1\r\nBcc: eve@evil.test\r\n\r\nforged body")
    built = build(replace(BASE, subject=subject))
    msg = parse(built)
    assert msg["Subject"] == subject
    assert msg["X-Injected"] is None and msg["Bcc"] is None
    assert content(msg) == BASE.text
    assert b"forged body" not in built.raw


def test_encoded_word_in_filename_cannot_inject_part_headers() -> None:
    filename = b_word('a.pdf"\r\nX-Part: 1\r\nContent-Type: text/html')
    draft = replace(BASE, attachments=(Attachment(filename, "application/pdf", b"%PDF"),))
    built = build(draft)
    (_, att) = parse(built).iter_parts()
    assert att.get_filename() == filename
    assert list(att.keys()) == PART_HEADERS
    assert att.get_content_type() == "application/pdf"
    assert b"X-Part" not in built.raw


def test_encoded_word_in_extra_header_value_cannot_inject() -> None:
    value = b_word("x\r\nBcc: eve@evil.test")
    msg = parse(build(replace(BASE, headers=(("X-Campaign", value),))))
    assert msg["X-Campaign"] == value
    assert msg["Bcc"] is None


def test_long_filename_uses_rfc2231_sections_and_round_trips() -> None:
    filename = "Präsentation " * 18 + ".pdf"
    draft = replace(BASE, attachments=(Attachment(filename, "application/pdf", b"%PDF"),))
    built = build(draft)
    assert b"filename*0*=utf-8''" in built.raw and b"filename*1*=" in built.raw
    assert_wire_safe(built.raw)
    assert all(len(line) <= 78 for line in built.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    (_, att) = parse(built).iter_parts()
    assert att.get_filename() == filename.strip()


# Pieces an attacker wraps in encoded-words: line breaks, address syntax, quotes, parameters,
# other addresses, nested encoded-word syntax and non-ASCII.
ATTACK_PIECES = [
    "\r\n", "\n", "\r", "\r\n\r\n", "<", ">", ",", ";", '"', "'", "\\", "\t", " ", "=?", "?=",
    "ceo@bigbank.test", "The CEO <ceo@bigbank.test>", "X-Injected: 1", "Bcc: eve@evil.test",
    'filename="evil.exe"', "Content-Type: text/html", "--boundary", "Grüße", "社長", "😀",
]
attack_payload = st.lists(
    st.sampled_from(ATTACK_PIECES) | st.text(max_size=6), min_size=1, max_size=6
).map("".join)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An encoded-word as an attacker would type it: B or Q, any case, UTF-8 or Latin-1."""
    payload = draw(attack_payload)
    charset = draw(st.sampled_from(["utf-8", "UTF-8", "iso-8859-1"]))
    try:
        payload.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    try:
        word = draw(st.sampled_from([b_word, q_word]))(payload, charset)
    except UnicodeEncodeError:  # lone surrogates from st.text: not encodable at all
        word = b_word("x")
    return word.replace("?b?", draw(st.sampled_from(["?b?", "?B?"])))


# Text mixing encoded-words with plain pieces and arbitrary single-line text.
hostile_text = st.lists(
    encoded_words()
    | st.sampled_from(["Ada", "CEO", "<", ",", '"', "=?", "?=", "Grüße", " ", "\t"])
    | header_text,
    min_size=1,
    max_size=4,
).map(lambda parts: " ".join(parts))


def _name_refused_for(name: str) -> bool:
    """Refusals the display-name rules allow: raw lookalike characters, or too long."""
    collapsed = " ".join(name.split())
    return any(c in collapsed for c in "<>@") or len(name.strip(" \t")) > 200


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hostile_text | header_text)
def test_any_name_leaves_exactly_the_identity_address_in_from(name: str) -> None:
    try:
        built = build(replace(BASE, from_name=name))
    except InvalidInput as exc:
        assert exc.field == "from_name"
        assert _name_refused_for(name)
        return
    assert not _name_refused_for(name)
    assert_wire_safe(built.raw)
    msg = parse(built)
    assert_one_from(built, msg, " ".join(name.split()))
    assert list(msg.keys()) == TEXT_ONLY


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=hostile_text | header_text, value=hostile_text | header_text)
def test_any_subject_and_header_value_decode_to_the_given_text(subject: str, value: str) -> None:
    draft = replace(BASE, subject=subject, headers=(("X-Campaign", value),))
    try:
        built = build(draft)
    except InvalidInput as exc:
        # Only the length limit may refuse single-line text.
        assert exc.field == "subject" and len(subject.strip(" \t")) > 998
        return
    assert_wire_safe(built.raw)
    msg = parse(built)
    assert msg["Subject"] == subject.strip(" \t")
    assert msg["X-Campaign"] == value.strip(" \t")
    assert list(msg.keys()) == [*ADDRESSING, "X-Campaign", *TEXT_ONLY[5:]]
    assert_one_from(built, msg, BASE.from_name)
    assert content(msg) == BASE.text


def filename_of(part: EmailMessage) -> str:
    """The file name as a standard reader sees it. `get_filename()` unquotes twice, so a name
    that itself starts and ends with a double quote loses them; unquote once here instead."""
    value = part.get_param("filename", header="content-disposition", unquote=False)
    assert isinstance(value, str)
    return unquote(value)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    filenames=st.lists(hostile_text | header_text.filter(str.strip), min_size=1, max_size=2),
    data=st.binary(max_size=64),
)
@example(filenames=['" =?utf-8?b?DQo=?= "'], data=b"x")  # quotes that are part of the name
def test_any_filename_decodes_to_the_given_text(filenames: list[str], data: bytes) -> None:
    attachments = tuple(Attachment(f, "application/pdf", data) for f in filenames)
    try:
        built = build(replace(BASE, attachments=attachments))
    except InvalidInput as exc:
        # Only the plain-file-name rules may refuse: folders, angle brackets, empty, too long.
        assert exc.field is not None and exc.field.endswith(".filename")
        bad = filenames[int(exc.field.split("[")[1].split("]")[0])]
        assert (
            any(c in bad for c in "/\\<>") or not bad.strip() or len(bad.strip(" \t")) > 255
        )
        return
    assert_wire_safe(built.raw)
    msg = parse(built)
    assert list(msg.keys()) == [*ADDRESSING, "Content-Type", "MIME-Version"]
    body, *atts = msg.iter_parts()
    assert content(body) == BASE.text
    assert len(atts) == len(filenames)
    for att, filename in zip(atts, filenames, strict=True):
        assert list(att.keys()) == PART_HEADERS
        assert att.get_content_type() == "application/pdf"
        assert att.get_content_disposition() == "attachment"
        assert filename_of(att) == filename.strip()
        assert att.get_payload(decode=True) == data
        assert not list(att.iter_parts())
    assert_one_from(built, msg, BASE.from_name)


def test_repeated_addresses_are_checked_alike_every_time() -> None:
    # Address checks are remembered between drafts; a refusal must still name its own field.
    bad = "not an address"
    for field in ("to", "cc", "bcc", "to", "from_email", "reply_to"):
        value = (bad,) if field in ("to", "cc", "bcc") else bad
        with pytest.raises(InvalidInput) as info:
            build(replace(BASE, **{field: value}))  # type: ignore[arg-type]
        name = f"{field}[0]" if field in ("to", "cc", "bcc") else field
        assert info.value.field == name
        assert str(info.value).startswith(f"{name}: 'not an address' is not a valid email")
    for _ in range(2):
        draft = replace(BASE, to=(" Carol@Example.ORG ",), reply_to="Carol@Example.ORG")
        assert envelope_recipients(draft) == ("Carol@example.org",)
        assert parse(build(draft))["Reply-To"] == "Carol@example.org"
