"""Address and header-text rules: what is accepted, what is refused, and what the user is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postway.domain.addresses import (
    _normalize,
    ascii_form,
    check_display_name,
    check_header_text,
    domain_of,
    needs_smtputf8,
    normalize_address,
)
from postway.errors import InvalidInput

INJECTIONS = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x0b",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob@example.com", "bob@example.com"),
        ("  bob@Example.COM \t", "bob@example.com"),
        ("Bob.Smith+tag@example.com", "Bob.Smith+tag@example.com"),  # local part case kept
        ("zoe@Bücher.example", "zoe@bücher.example"),  # IDN: Unicode form, lower-cased
        ("zoe@xn--bcher-kva.example", "zoe@bücher.example"),  # A-label input, same result
        ("用户@例子.广告", "用户@例子.广告"),  # SMTPUTF8 local part
        ("demo@bounce.postway.test", "demo@bounce.postway.test"),  # .test allowed for demo
    ],
)
def test_normalize_address_accepts(value: str, expected: str) -> None:
    assert normalize_address(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "required"),
        ("   ", "required"),
        ("bob@", "not a valid email address"),
        ("bob", "not a valid email address"),
        ("@example.com", "not a valid email address"),
        ("bob@@example.com", "not a valid email address"),
        ("Bob <bob@example.com>", "angle bracket"),
        ("<bob@example.com>", "angle bracket"),
        ('"Bob" bob@example.com', "not a valid email address"),
        ("bob@example.com, eve@example.com", "comma"),
        ("bob@example.com;eve@example.com", "semicolon"),
        ("bob smith@example.com", "not a valid email address"),
        ("bob@localhost", "not a valid email address"),
        ("bob@[127.0.0.1]", "not a valid email address"),
        ("x" * 250 + "@example.com", "not a valid email address"),
        # An encoded-word is legal dot-atom text, but readers decode it inside an address.
        ("=?utf-8?q?ceo?=@example.com", "encoded-word"),
        ("=?utf-8?b?Y2VvQGJhbmsudGVzdD4=?=@example.com", "encoded-word"),
    ],
)
def test_normalize_address_refuses(value: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_address(value, field="to[1]")
    assert info.value.field == "to[1]"
    assert str(info.value).startswith("to[1]: ")
    assert reason in str(info.value)


@pytest.mark.parametrize("bad", INJECTIONS)
def test_normalize_address_refuses_control_characters(bad: str) -> None:
    with pytest.raises(InvalidInput, match="is not a valid email address"):
        normalize_address(f"bob@example.com{bad}Bcc: eve@example.com")
    with pytest.raises(InvalidInput):
        normalize_address(f"bob{bad}@example.com")


def test_normalize_address_message_names_the_value() -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_address("bob@", field="to[1]")
    assert str(info.value).startswith("to[1]: 'bob@' is not a valid email address: ")


def test_normalize_address_refuses_non_text() -> None:
    with pytest.raises(InvalidInput):
        normalize_address(None)  # type: ignore[arg-type]


def test_domain_of_is_lower_case_ascii() -> None:
    assert domain_of("bob@Example.COM") == "example.com"
    assert domain_of("zoe@bücher.example") == "xn--bcher-kva.example"
    assert domain_of(normalize_address("zoe@BÜCHER.example")) == "xn--bcher-kva.example"
    assert domain_of("用户@例子.广告") == "xn--fsqu00a.xn--4rr70v"


def test_domain_of_without_domain_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        domain_of("no-at-sign")


def test_needs_smtputf8_only_for_non_ascii_local_part() -> None:
    assert needs_smtputf8("用户@example.com")
    assert not needs_smtputf8("zoe@bücher.example")
    assert not needs_smtputf8("bob@example.com")


def test_ascii_form_encodes_domain_only() -> None:
    assert ascii_form("zoe@bücher.example") == "zoe@xn--bcher-kva.example"
    assert ascii_form("用户@例子.广告") == "用户@xn--fsqu00a.xn--4rr70v"


def test_check_header_text_strips_and_keeps_unicode() -> None:
    assert check_header_text("  Grüße aus Köln \t", field="subject") == "Grüße aus Köln"
    assert check_header_text("a\tb", field="subject") == "a\tb"  # TAB is legal in headers
    assert check_header_text("", field="subject") == ""


@pytest.mark.parametrize("bad", INJECTIONS)
def test_check_header_text_refuses_injection(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_header_text(f"Hello{bad}Bcc: eve@example.com", field="subject")
    assert info.value.field == "subject"
    assert "single line" in str(info.value)


def test_check_header_text_refuses_lone_surrogate() -> None:
    with pytest.raises(InvalidInput):
        check_header_text("a\ud800b", field="subject")


def test_check_header_text_length_limit() -> None:
    assert check_header_text("x" * 998, field="subject")
    with pytest.raises(InvalidInput, match="the limit is 998"):
        check_header_text("x" * 999, field="subject")
    with pytest.raises(InvalidInput, match="the limit is 5"):
        check_header_text("abcdef", field="x", max_len=5)


def test_check_display_name() -> None:
    assert check_display_name(" Zoë Doe, CEO ") == "Zoë Doe, CEO"
    assert check_display_name('Bob "The Closer" O\'Neil') == 'Bob "The Closer" O\'Neil'
    for bad in ("ceo@company.com", "Bob <", "Bob\r\nBcc: x@y.com"):
        with pytest.raises(InvalidInput) as info:
            check_display_name(bad, field="from_name")
        assert info.value.field == "from_name"
    with pytest.raises(InvalidInput):
        check_display_name("x" * 201)


def test_encoded_word_syntax_in_a_display_name_is_kept_as_text() -> None:
    # Refused nowhere: message building writes it so readers see these very characters.
    name = "=?utf-8?b?VGhlIENFTyA8Y2VvQGJpZ2JhbmsudGVzdD4NClgtT3JpZzo=?="
    assert check_display_name(name, field="name") == name
    assert check_header_text(f"Re: {name}", field="subject") == f"Re: {name}"


@given(st.text())
def test_normalize_address_raises_only_invalid_input(value: str) -> None:
    try:
        result = normalize_address(value)
    except InvalidInput:
        return
    # Whatever is accepted is one bare, single-line address that normalizes to itself.
    assert result.count("@") == 1
    assert not any(c in result for c in "\r\n\x00<>,; ")
    assert normalize_address(result) == result
    assert domain_of(result).isascii()


@given(st.emails())
def test_generated_addresses_either_normalize_or_explain(value: str) -> None:
    try:
        result = normalize_address(value)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert domain_of(result) == domain_of(result).lower()


@given(st.text())
def test_check_header_text_result_is_single_line(value: str) -> None:
    try:
        result = check_header_text(value, field="subject")
    except InvalidInput:
        return
    assert "\r" not in result and "\n" not in result and "\x00" not in result
    assert len(result.splitlines()) <= 1


@given(st.text())
def test_domain_of_raises_only_invalid_input(value: str) -> None:
    try:
        result = domain_of(value)
    except InvalidInput:
        return
    assert result.isascii() and result == result.lower()


@given(st.one_of(st.emails(), st.text()))
def test_an_address_seen_before_gets_the_answer_it_got_the_first_time(value: str) -> None:
    # normalize_address remembers valid addresses; a remembered answer must be the answer
    # the full check gives, and an invalid address must be refused every time
    try:
        checked = _normalize(value, "to")
    except InvalidInput:
        for _ in range(2):
            with pytest.raises(InvalidInput):
                normalize_address(value, field="to")
        return
    assert normalize_address(value) == checked
    assert normalize_address(value) == checked  # now from memory
    assert normalize_address(checked) == checked


def test_a_remembered_address_is_not_refused_under_another_field_name() -> None:
    first = normalize_address("Ada@Example.ORG", field="to[0]")
    assert normalize_address("Ada@Example.ORG", field="cc[3]") == first == "Ada@example.org"
    with pytest.raises(InvalidInput) as exc:
        normalize_address("not-an-address", field="cc[3]")
    assert exc.value.field == "cc[3]"
