"""Fast paths of the bounce parser give the answers of the slow ones they stand in for."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postway.bounces.engines import _MICROSOFT_SIGN_RE, _POWERMTA_RE, _QMAIL_RE
from postway.bounces.formats import _COMMAND_CONTEXT_RE, _ORIGINAL_RE, _SESSION_RE
from postway.bounces.parse import _BOUNCE_SIGNAL_RE, _DELAY_RE
from postway.domain.regex_anchors import Prefiltered, folded_twin

_RELAXED = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])

# The case-folding patterns the parser runs as plain twins over lower-cased text.
_FOLDED = {
    "delay": _DELAY_RE, "bounce-signal": _BOUNCE_SIGNAL_RE, "original": _ORIGINAL_RE,
    "command-context": _COMMAND_CONTEXT_RE, "powermta": _POWERMTA_RE,
    "microsoft": _MICROSOFT_SIGN_RE, "qmail": _QMAIL_RE, "session": _SESSION_RE,
}
# Filler around the matches: other case, line ends, and letters that fold onto ASCII ones.
_FILLER = st.sampled_from(["", " ", "\n", "\n\n", "--", ">", "ſ", "İ", "K", "x", "Ü", "\t",
                           "TEXT ", "550 ", "5.1.1 ", "<a@b.example>"])


def _recased(text: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips + [False] * len(text),
                                                             strict=False))


@st.composite
def _texts(draw: st.DrawFn, pattern: re.Pattern[str]) -> str:
    """Texts made of matches of `pattern` (with letters' case flipped at random) and filler."""
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        pieces.append(draw(_FILLER))
        if draw(st.booleans()):
            match = draw(st.from_regex(pattern, fullmatch=True))[:300]
            pieces.append(_recased(match, draw(st.lists(st.booleans(), max_size=len(match)))))
    return "".join(pieces)


@pytest.mark.parametrize("name", sorted(_FOLDED))
def test_each_folded_pattern_has_a_twin(name: str) -> None:
    assert folded_twin(_FOLDED[name]) is not None


@pytest.mark.parametrize("name", sorted(_FOLDED))
@_RELAXED
@given(data=st.data())
def test_the_twin_matches_the_lowered_text_where_the_pattern_matches(
        name: str, data: st.DataObject) -> None:
    """At every position of an ASCII text, the same match (or none) in both."""
    pattern = _FOLDED[name]
    twin = folded_twin(pattern)
    assert twin is not None
    text = data.draw(_texts(pattern))
    if not text.isascii():
        text = text.encode("ascii", "replace").decode()
    low = text.lower()
    for i in range(len(text) + 1):
        m, t = pattern.match(text, i), twin.match(low, i)
        assert (m and m.span()) == (t and t.span()), (text, i)


@pytest.mark.parametrize("name", sorted(_FOLDED))
@_RELAXED
@given(data=st.data())
def test_prefiltered_answers_as_the_pattern(name: str, data: st.DataObject) -> None:
    """Same first match (offsets, and every group when searched whole) and the same matches
    found in turn, on any text (the twin is only used on ASCII text)."""
    pattern = _FOLDED[name]
    text = data.draw(_texts(pattern))
    whole, narrowed = Prefiltered(pattern, narrow=False), Prefiltered(pattern)
    want = pattern.search(text)
    for fast, low in ((whole, None), (whole, text.lower()), (narrowed, None)):
        got = fast.search(text, low if text.isascii() else None)
        assert (got and (got.span(), got.group())) == (want and (want.span(), want.group()))
    got = whole.search(text)
    assert (got and got.groups()) == (want and want.groups())

    def seen(matches: object) -> list[tuple[tuple[int, int], str]]:
        return [(m.span(), next((g for g in m.groups() if g), "")) for m in matches]

    assert seen(narrowed.finditer(text)) == seen(pattern.finditer(text))
    assert seen(whole.finditer(text)) == seen(pattern.finditer(text))


@pytest.mark.parametrize(("source", "twin"), [
    ("[A-Z]x", "[a-z]x"),
    ("X[^A-Z]y", "x[^a-z]y"),
    (r"(?P<Name>a)\S", r"(?P<Name>a)\S"),
    ("a|B", "a|b"),
    ("[A-Za-z-]+:", "[a-za-z-]+:"),
    ("[A-z]", None),  # the I-range also holds [ \ ] ^ _ `
    (r"\x41", None),  # an escaped capital
    (r"[\041-\176]", None),  # a range reaching into A-Z
    (r"(a)\1", None),  # back-references compare with folding
    ("(?i:x)", None),  # inline flags
    ("(?-i:X)", None),
    ("ſ", None),  # folds onto "s"
    ("\u212a", None),  # the Kelvin sign folds onto "k"
])
def test_twins_only_where_shown_the_same(source: str, twin: str | None) -> None:
    got = folded_twin(re.compile(source, re.IGNORECASE))
    assert (got.pattern if got is not None else None) == twin
    assert folded_twin(re.compile("abc")) is None  # nothing to unfold


@pytest.mark.parametrize("text", ["ſmtp:rcpt", "İN REPLY TO mail command", "\u212a",
                                  "X-POWERMTA-BOUNCECATEGORY: bad-mailbox", "RESOLVER.ADR.x"])
def test_any_text_is_searched_as_by_the_pattern(text: str) -> None:
    for pattern in _FOLDED.values():
        want = pattern.search(text)
        got = Prefiltered(pattern, narrow=False).search(text)
        assert (got and got.span()) == (want and want.span())


_LINE_BITS = st.sampled_from(["a", "From: x", "\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d",
                              "\x1e", "\x85", "\u2028", "\udc85", "\udce2", " ", "--b"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE_BITS, max_size=30))
def test_lines_are_split_as_the_standard_parser_splits_them(bits: list[str]) -> None:
    from io import StringIO

    from postway.bounces.mime_split import _lines

    text = "".join(bits).encode("utf-8", "surrogateescape").decode("ascii", "surrogateescape")
    assert _lines(text) == StringIO(text, newline="").readlines()


# What the splitter stores: ASCII, with surrogates standing for the other bytes.
_CTYPE_BITS = st.sampled_from(["text/plain", "TEXT/HTML", "message/rfc822", " ", ";", "/",
                               "charset=utf-8", "multipart/mixed", "\tx", "\n ", "\udce9",
                               "boundary=\"a;b\"", "text", "=?utf-8?q?x?="])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_CTYPE_BITS, max_size=6).map("".join), max_size=3),
       st.sampled_from(["text/plain", "message/rfc822"]))
def test_content_type_read_from_the_headers_as_the_standard_way(
        values: list[str], default: str) -> None:
    from email._policybase import compat32
    from email.message import Message

    from postway.bounces.mime_split import _content_type

    msg = Message(policy=compat32)
    msg.set_default_type(default)
    msg._headers.append(("X-Other", "text/html"))  # noqa: SLF001 - as the splitter fills it
    for value in values:
        msg._headers.append(("Content-TYPE", value))  # noqa: SLF001
    assert _content_type(msg) == msg.get_content_type()
