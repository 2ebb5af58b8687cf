"""One copy of a built message naming only some of its recipients (`restrict_visible_recipients`):
To and Cc name exactly the subset in their own order, a Bcc copy names only its recipient,
and every other header and the body stay byte for byte."""

from __future__ import annotations

import email
from email.policy import default

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from postway.domain.addresses import ascii_form
from postway.domain.message import (
    Draft,
    build_message,
    restrict_visible_recipients,
    visible_recipients,
)
from postway.errors import InvalidInput

LOCAL = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s
)
DOMAIN = st.sampled_from(
    ["client.example", "b\u00fccher.example", "mail.very-long-domain-name-for-folding.example"]
)
ADDRESS = st.one_of(
    st.builds(lambda lp, d: f"{lp}@{d}", LOCAL, DOMAIN),
    st.builds(lambda lp, d: f"j\u00f6{lp}@{d}", LOCAL, DOMAIN),  # needs SMTPUTF8
)


def key(address: str) -> str:
    return ascii_form(address).lower()


@st.composite
def messages(draw: st.DrawFn) -> tuple[Draft, bytes]:
    pool = draw(st.lists(ADDRESS, min_size=1, max_size=14, unique_by=key))
    kinds = draw(st.lists(st.sampled_from(["to", "cc", "bcc"]), min_size=len(pool),
                          max_size=len(pool)))  # fmt: skip
    by = {k: tuple(a for a, kind in zip(pool, kinds, strict=True) if kind == k) for k in kinds}
    words = st.text("abc XYZ\u00e9\u4e2d-", max_size=30)
    draft = Draft(
        from_name=draw(words),
        from_email="rep@acme.example",
        to=by.get("to", ()),
        cc=by.get("cc", ()),
        bcc=by.get("bcc", ()),
        subject=draw(words),
        text=draw(st.text(max_size=300)),
    )
    try:
        built = build_message(draft, message_id_domain="acme.example")
    except InvalidInput:
        reject()  # a draft the builder refuses is not what this test is about
    return draft, built.raw


def parsed_keys(msg: email.message.EmailMessage, name: str) -> list[str]:
    header = msg[name]
    if header is None:
        return []
    # message_from_bytes keeps UTF-8 header bytes (SMTPUTF8 addresses) as surrogate escapes
    specs = [a.addr_spec.encode("utf-8", "surrogateescape") for a in header.addresses]
    return [key(s.decode("utf-8")) for s in specs]


def others(msg: email.message.EmailMessage) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in msg.items() if k.lower() not in ("to", "cc", "bcc")]


def body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


@settings(max_examples=120, deadline=None)
@given(messages(), st.data())
def test_to_and_cc_name_exactly_the_subset(message: tuple[Draft, bytes], data: st.DataObject):
    draft, raw = message
    to = data.draw(st.lists(st.sampled_from(draft.to), unique=True) if draft.to else st.just([]))
    cc = data.draw(st.lists(st.sampled_from(draft.cc), unique=True) if draft.cc else st.just([]))
    if not (to or cc):
        with pytest.raises(InvalidInput):
            restrict_visible_recipients(raw, to, cc)
        return
    # the caller's order does not matter: the field's own order is kept
    out = restrict_visible_recipients(raw, list(reversed(to)), cc)
    before = email.message_from_bytes(raw, policy=default)
    after = email.message_from_bytes(out, policy=default)
    assert parsed_keys(after, "to") == [key(a) for a in draft.to if a in to]
    assert parsed_keys(after, "cc") == [key(a) for a in draft.cc if a in cc]
    assert ("To" in after) == bool(to) and ("Cc" in after) == bool(cc)
    # no Bcc address in any address field (whole addresses: "2@x" is not inside "02@x")
    shown = {*parsed_keys(after, "to"), *parsed_keys(after, "cc"), *parsed_keys(after, "from")}
    assert "Bcc" not in after and not {key(b) for b in draft.bcc} & shown
    assert others(after) == others(before)
    assert after["Message-ID"] == before["Message-ID"]
    assert body(out) == body(raw)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    if set(to) == set(draft.to) and set(cc) == set(draft.cc):
        assert out == raw  # nothing to take away: the same bytes


@settings(max_examples=80, deadline=None)
@given(messages(), st.data())
def test_a_bcc_copy_names_only_its_recipient(message: tuple[Draft, bytes], data: st.DataObject):
    draft, raw = message
    if not draft.bcc:
        return
    who = data.draw(st.sampled_from(draft.bcc))
    out = restrict_visible_recipients(raw, [], [], [who])
    after = email.message_from_bytes(out, policy=default)
    assert "To" not in after and "Cc" not in after
    assert parsed_keys(after, "bcc") == [key(who)]
    others_bcc = [b for b in draft.bcc if key(b) != key(who)]
    shown = {*parsed_keys(after, "bcc"), *parsed_keys(after, "from")}
    assert not {key(b) for b in others_bcc} & shown  # whole addresses, not substrings
    assert others(after) == others(email.message_from_bytes(raw, policy=default))
    assert body(out) == body(raw)


def built(**kw: object) -> bytes:
    draft = Draft(from_name="Rep", from_email="rep@acme.example", subject="s", text="hi", **kw)  # type: ignore[arg-type]
    return build_message(draft, message_id_domain="acme.example").raw


def test_visible_recipients_reads_both_fields_in_order():
    raw = built(to=("b@x.example", "a@x.example"), cc=("c@x.example",), bcc=("d@x.example",))
    assert visible_recipients(raw) == (("b@x.example", "a@x.example"), ("c@x.example",))


def test_an_address_the_field_does_not_name_is_refused():
    raw = built(to=("a@x.example",), cc=("c@x.example",))
    with pytest.raises(InvalidInput, match="not named in the message's To"):
        restrict_visible_recipients(raw, ["c@x.example"], [])  # would move Cc into To
    with pytest.raises(InvalidInput, match="Cc"):
        restrict_visible_recipients(raw, ["a@x.example"], ["z@x.example"])


@pytest.mark.parametrize(
    "raw",
    [
        b"To: a@x.example\nSubject: s\n\nbody",  # bare LF: not built by Postway
        b"To: Alice <a@x.example>\r\nSubject: s\r\n\r\nbody",  # a display name in To
        b" folded first\r\nTo: a@x.example\r\n\r\nbody",
        b"To: a@x.example\r\nTo: b@x.example\r\n\r\nbody",
        b"To: a@x.example\r\nSubject: no end of header",
    ],
)
def test_a_raw_postway_did_not_build_is_refused(raw: bytes):
    with pytest.raises(InvalidInput):
        restrict_visible_recipients(raw, ["a@x.example"], [])
