"""Anchors are necessary: every text a pattern matches holds one of them."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postway.bounces.engines import _PRODUCT_SENTENCES, _QMAIL_SENTENCES
from postway.domain.bounce_phrases import PHRASES
from postway.domain.regex_anchors import anchors, may_match

_PATTERNS = {**{f"phrase:{k}": p for k, p in PHRASES.items()},
             **{f"sentence:{p.pattern[:30]}": p
                for p, _, _ in _PRODUCT_SENTENCES + _QMAIL_SENTENCES}}


@pytest.mark.parametrize("name", sorted(_PATTERNS))
def test_every_phrase_list_has_anchors(name: str) -> None:
    assert anchors(_PATTERNS[name]) is not None


@pytest.mark.parametrize("name", sorted(_PATTERNS))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_matching_text_holds_an_anchor(name: str, data: st.DataObject) -> None:
    pattern = _PATTERNS[name]
    found = anchors(pattern)
    text = data.draw(st.from_regex(pattern))
    assert pattern.search(text)
    assert may_match(found, text), (text, found)


@pytest.mark.parametrize(("source", "expected"), [
    ("abc|d(?:ef)?ghi", ("abc", "ghi")),
    ("(?:x|yz)", None),  # "x" is too short to test anything
    ("(?:hello|world) there", (" there",)),
    ("a(?:hello|world)b", ("hello", "world")),
    ("ab+cd", None),
    ("abc{2}def", ("def",)),
    (r"foo\.bar\b", ("foo.bar",)),
    ("[abc]xyz", ("xyz",)),
    ("x(?=abc)", None),
    ("(?i)abc", None),
    ("abc(?i:def)", None),
])
def test_anchor_reading(source: str, expected: tuple[str, ...] | None) -> None:
    got = anchors(source)
    assert (set(got) if got is not None else None) == (set(expected) if expected else None)


def test_case_folding_patterns_get_none() -> None:
    assert anchors(re.compile("spam", re.IGNORECASE)) is None
    assert may_match(None, "anything")


@pytest.mark.parametrize("text", ["Diagnostic information for administrators", "RESOLVER.ADR.x",
                                  "nothing here", "reſolver.adr. ", "İnformation", "routing.x"])
def test_prefiltered_search_answers_as_the_pattern(text: str) -> None:
    from postway.bounces.engines import _MICROSOFT_SIGN_RE
    from postway.domain.regex_anchors import Prefiltered

    folded = re.compile(_MICROSOFT_SIGN_RE.pattern, re.IGNORECASE)
    assert bool(Prefiltered(folded).search(text)) == bool(folded.search(text))
    plain = re.compile("resolver|routing")
    assert bool(Prefiltered(plain).search(text)) == bool(plain.search(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["in reply to RCPT TO command", "after end of data", ">>> MAIL",
                                 " when sending DATA", "smtp:rcpt", "did not like our data",
                                 "connected to mx.example but sender", "\n", " ", "Ünïcode",
                                 "ſmtp:rcpt", "İN REPLY TO mail command", "while talking"]),
                max_size=8))
def test_narrowed_finditer_gives_the_same_matches(pieces: list[str]) -> None:
    from postway.bounces.formats import _COMMAND_CONTEXT_FAST, _COMMAND_CONTEXT_RE

    text = "".join(pieces)

    def seen(matches: object) -> list[tuple[tuple[int, int], str]]:
        return [(m.span(), next((g for g in m.groups() if g), "")) for m in matches]

    assert seen(_COMMAND_CONTEXT_FAST.finditer(text)) == seen(_COMMAND_CONTEXT_RE.finditer(text))
