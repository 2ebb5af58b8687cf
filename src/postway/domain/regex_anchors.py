"""Literal strings a pattern cannot match without: a cheap test before a costly search.

`anchors(pattern)` reads a regular expression's source and returns, for each of its
alternatives, a piece of literal text every match of that alternative contains, or None when
some alternative has no such piece (then the pattern must always be searched). If none of the
anchors occurs in a text (`str.__contains__`, a fast scan in C), the pattern cannot match it,
so the search is skipped; otherwise the pattern is searched as before. The answer is the same
either way, only cheaper: the bounce phrase lists are alternations of dozens of phrases, and
most texts contain none of them.

Only patterns compiled without re.IGNORECASE are to be given anchors (case folding makes
"ſ" match "s"). The reader understands the syntax the phrase lists use and answers None to
anything it does not know, which is always safe. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import cast

# The standard library's own reader of pattern sources (private, hence the guard). The ignores:
# typeshed stubs `re` as a single module, without these private submodules (so they are Any).
try:
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another Python: no lowered search, same answers
    _sre_c = _sre_parser = None

MIN_ANCHOR = 3  # shorter pieces occur in nearly every text and would test nothing
_CLASS_ESCAPES = frozenset("dDwWsSbBAZzGnrtfv0123456789")
_QUANTIFIERS = frozenset("?*+{")
_INLINE_FOLDING_RE = re.compile(r"\(\?[aiLmsux-]*[ix]")  # (?i) or (?x) anywhere


def anchors(pattern: re.Pattern[str] | str) -> tuple[str, ...] | None:
    """One necessary literal per alternative of `pattern`, or None if some alternative has
    none (or the pattern uses flags or syntax this reader does not know)."""
    if isinstance(pattern, re.Pattern):
        if pattern.flags & (re.IGNORECASE | re.VERBOSE):
            return None
        source = pattern.pattern
    else:
        source = pattern
    if _INLINE_FOLDING_RE.search(source):
        return None
    try:
        found = _alternation(source)
    except _Unknown:
        return None
    if found is None:
        return None
    # A piece that holds another is implied by it: "blocked " by "block".
    unique = sorted(set(found), key=len)
    kept: list[str] = []
    for piece in unique:
        if not any(k in piece for k in kept):
            kept.append(piece)
    return tuple(kept)


class _Unknown(Exception):
    """Syntax this reader does not follow."""


def _split_top(source: str) -> list[str]:
    """`source` cut at its top-level "|" (outside groups, classes and escapes)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(source, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
        i += 1
    parts.append(source[start:])
    return parts


def _class_end(source: str, i: int) -> int:
    """The index after the character class opening at `i`."""
    j = i + 1
    if j < len(source) and source[j] == "^":
        j += 1
    if j < len(source) and source[j] == "]":
        j += 1
    while j < len(source) and source[j] != "]":
        j += 2 if source[j] == "\\" else 1
    if j >= len(source):
        raise _Unknown
    return j + 1


def _group_end(source: str, i: int) -> int:
    """The index after the group opening at `i`."""
    depth, j = 0, i
    while j < len(source):
        c = source[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _class_end(source, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise _Unknown


def _quantifier_end(source: str, i: int) -> int:
    """The index after a quantifier starting at `i` (with its lazy/possessive mark), or `i`
    when none starts there."""
    if i >= len(source) or source[i] not in _QUANTIFIERS:
        return i
    if source[i] == "{":
        close = source.find("}", i)
        if close < 0 or not re.fullmatch(r"\d*,?\d*", source[i + 1:close]):
            return i  # a literal "{"
        i = close + 1
    else:
        i += 1
    if i < len(source) and source[i] in "?+":
        i += 1
    return i


def _mandatory(quantifier: str) -> bool:
    """Whether a quantified item occurs at least once."""
    if not quantifier:
        return True
    if quantifier[0] == "+":
        return True
    if quantifier[0] == "{":
        low = quantifier[1:].split(",")[0].rstrip("}")
        return bool(low) and int(low) >= 1
    return False


def _alternation(source: str) -> list[str] | None:
    found: list[str] = []
    for alternative in _split_top(source):
        got = _sequence(alternative)
        if got is None:
            return None
        found += got
    return found


def _sequence(source: str) -> list[str] | None:
    """Anchors for one alternative: its longest literal run, else the anchors of a group it
    cannot do without."""
    runs: list[str] = []
    groups: list[list[str]] = []
    run: list[str] = []
    i = 0

    def cut() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    while i < len(source):
        c = source[i]
        if c == "(":
            end = _group_end(source, i)
            inner = source[i + 1:end - 1]
            q_end = _quantifier_end(source, end)
            cut()
            body: str | None = inner  # the group's pattern, None when it can give no anchor
            if inner.startswith("?"):
                if inner.startswith("?:"):
                    body = inner[2:]
                elif inner.startswith("?P<"):
                    body = inner[inner.index(">") + 1:]
                else:
                    body = None  # look-arounds, flags, back-references: no anchor
            if body is not None and _mandatory(source[end:q_end]):
                got = _alternation(body)
                if got:
                    groups.append(got)
            i = q_end
            continue
        if c == "[":
            cut()
            i = _quantifier_end(source, _class_end(source, i))
            continue
        if c in ".^$":
            cut()
            i = _quantifier_end(source, i + 1)
            continue
        if c in _QUANTIFIERS or c in ")|":
            raise _Unknown
        if c == "\\":
            if i + 1 >= len(source):
                raise _Unknown
            nxt = source[i + 1]
            char = None if nxt in _CLASS_ESCAPES or nxt.isalnum() else nxt
            step = 2
        else:
            char, step = c, 1
        q_end = _quantifier_end(source, i + step)
        quantifier = source[i + step:q_end]
        if char is None:
            cut()
        elif quantifier:
            cut()  # a repeated or optional character ends the run (it is not sure to be there)
        else:
            run.append(char)
        i = q_end
    cut()
    best = max(runs, key=len, default="")
    if len(best) >= MIN_ANCHOR:
        return [best]
    for group in groups:
        if all(len(a) >= MIN_ANCHOR for a in group):
            return group
    return None


def may_match(found: tuple[str, ...] | None, text: str) -> bool:
    """False only when `text` holds none of the anchors (so the pattern cannot match)."""
    if found is None:
        return True
    return any(a in text for a in found)


def alternative_anchors(source: str) -> list[tuple[str, ...] | None] | None:
    """For each top-level alternative of `source`, its anchors (None for an alternative that
    has none); None when the source uses syntax this reader does not follow."""
    if _INLINE_FOLDING_RE.search(source):
        return None
    try:
        parts = _split_top(source)
        found: list[tuple[str, ...] | None] = []
        for part in parts:
            got = _sequence(part)
            found.append(_minimal(got) if got is not None else None)
    except _Unknown:
        return None
    return found


def _minimal(found: list[str]) -> tuple[str, ...]:
    """The pieces, without those that hold another (implied by it: "blocked " by "block")."""
    kept: list[str] = []
    for piece in sorted(set(found), key=len):
        if not any(k in piece for k in kept):
            kept.append(piece)
    return tuple(kept)


def folded_twin(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """For a pattern compiled with re.IGNORECASE, a pattern without it that, run over the
    lower-cased text of an ASCII text, matches exactly where `pattern` matches that text, at
    every position; None when that is not shown.

    The twin is the source with its literal letters lower-cased (escapes kept). It is taken
    only when the standard library's reader shows it is the same pattern but for the case of
    its letters and ranges (A-Z for a-z), and that every literal and class member of the twin
    is an ASCII character other than A-Z (a range may not reach into A-Z), its classes being
    \\w \\d \\s and their negations, with no inline flags or back-references. On ASCII text
    case folding is then plain lower-casing, which keeps every offset; and case-folded
    matching costs ten to a hundred times the plain kind in Python's engine."""
    if _sre_parser is None or not pattern.flags & re.IGNORECASE or pattern.flags & re.VERBOSE:
        return None
    source = _lower_letters(pattern.pattern)
    try:
        original = _sre_parser.parse(pattern.pattern, pattern.flags)
        twin = _sre_parser.parse(source, pattern.flags)
        if not (_neutral(twin) and _same_but_case(original, twin)):
            return None
        return re.compile(source, pattern.flags & ~re.IGNORECASE)
    except Exception:  # noqa: BLE001 - anything unread: no twin, the pattern itself is used
        return None


def _lower_letters(source: str) -> str:
    """`source` with A-Z lower-cased outside escapes and group names."""
    out: list[str] = []
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            out.append(source[i:i + 2])
            i += 2
            continue
        if source.startswith(("(?P<", "(?P="), i):
            close = source.find(">" if source[i + 3] == "<" else ")", i)
            stop = len(source) if close < 0 else close + 1
            out.append(source[i:stop])
            i = stop
            continue
        out.append(c.lower() if "A" <= c <= "Z" else c)
        i += 1
    return "".join(out)


def _lowered_code(code: int) -> int:
    return code + 32 if 65 <= code <= 90 else code


def _lowered_member(member: object, value: object) -> tuple[object, object]:
    """A class member with its letter, or its range of capitals, lower-cased."""
    c = _sre_c
    if member is c.LITERAL:
        return member, _lowered_code(value)  # type: ignore[arg-type]
    if member is c.RANGE:
        lo, hi = cast("tuple[int, int]", value)  # the parser's RANGE value: (low, high)
        if 65 <= lo <= hi <= 90:
            return member, (lo + 32, hi + 32)
    return member, value


def _same_but_case(a: object, b: object) -> bool:  # noqa: C901, PLR0911 - one branch per opcode
    """Whether two parsed patterns differ only in the case of letters and A-Z ranges."""
    c = _sre_c
    if len(a) != len(b):  # type: ignore[arg-type]
        return False
    for (op, av), (op2, av2) in zip(a, b, strict=True):  # type: ignore[call-overload]
        if op is not op2:
            return False
        if op in (c.LITERAL, c.NOT_LITERAL):
            if av2 != _lowered_code(av):
                return False
        elif op is c.IN:
            # A class is a set: the reader drops a member repeated once lower-cased.
            if {_lowered_member(member, value) for member, value in av} != set(av2):
                return False
        elif op is c.SUBPATTERN:
            if av[:3] != av2[:3] or not _same_but_case(av[3], av2[3]):
                return False
        elif op is c.BRANCH:
            if len(av[1]) != len(av2[1]) or not all(
                    _same_but_case(x, y) for x, y in zip(av[1], av2[1], strict=True)):
                return False
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            if av[:2] != av2[:2] or not _same_but_case(av[2], av2[2]):
                return False
        elif op is c.ATOMIC_GROUP:
            if not _same_but_case(av, av2):
                return False
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if av[0] != av2[0] or not _same_but_case(av[1], av2[1]):
                return False
        elif av != av2:
            return False
    return True


def _neutral_char(code: int) -> bool:
    return code < 128 and not 65 <= code <= 90


def _neutral(items: object) -> bool:  # noqa: C901, PLR0911 - one branch per opcode
    c = _sre_c
    for op, av in items:  # type: ignore[attr-defined]
        if op in (c.LITERAL, c.NOT_LITERAL):
            if not _neutral_char(av):
                return False
        elif op is c.IN:
            for member, value in av:
                if member is c.LITERAL:
                    if not _neutral_char(value):
                        return False
                elif member is c.RANGE:
                    lo, hi = value
                    if hi >= 128 or (lo <= 90 and hi >= 65):
                        return False
                elif member not in (c.CATEGORY, c.NEGATE):
                    return False
        elif op in (c.ANY, c.AT):
            continue
        elif op is c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags or not _neutral(sub):
                return False
        elif op is c.BRANCH:
            if not all(_neutral(sub) for sub in av[1]):
                return False
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            if not _neutral(av[2]):
                return False
        elif op is c.ATOMIC_GROUP:
            if not _neutral(av):
                return False
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if not _neutral(av[1]):
                return False
        else:
            return False  # back-references, conditionals, anything new: not shown neutral
    return True


class Prefiltered:
    """A compiled pattern with its anchors: `search` answers as `pattern.search` does, at a
    fraction of the cost on the texts that hold few of its phrases.

    When no anchor occurs in the text the pattern cannot match, so nothing is searched. When
    some do, only the alternatives whose anchors occur (in their order) are searched: the ones
    left out cannot match anywhere in this text, so the leftmost match, and which alternative
    gives it, are the same as the whole pattern's. The smaller patterns are compiled once each.

    For a pattern compiled with re.IGNORECASE the anchors are read from its source and
    lower-cased, and are used only on an ASCII text (lower-cased by the caller or here): there
    case folding is plain lower-casing, while on other text "ſ" or "ı" match "s" or "i"."""

    __slots__ = ("pattern", "anchors", "folded", "_alternatives", "_pieces", "_subsets",
                 "_flat", "_always", "_lowered", "_narrow")

    _MAX_SUBSETS = 1024  # compiled sub-patterns kept per pattern

    def __init__(self, pattern: re.Pattern[str], *, narrow: bool = True) -> None:
        """`narrow=False` always searches the whole pattern (when a caller reads its groups
        by name or number, which a narrowed pattern renumbers or lacks)."""
        self.pattern = pattern
        self.folded = bool(pattern.flags & re.IGNORECASE)
        self._narrow = narrow
        per = None if pattern.flags & re.VERBOSE else alternative_anchors(pattern.pattern)
        if per is not None and self.folded:
            per = [tuple(a.lower() for a in p) if p is not None else None for p in per]
        self._alternatives = _split_top(pattern.pattern) if per is not None else []
        self._pieces = per or []
        if per is None or any(p is None for p in per):
            self.anchors: tuple[str, ...] | None = None
        else:
            self.anchors = _minimal([a for p in per if p is not None for a in p])
        # Per set of alternatives: the pattern, and its plain twin for lower-cased ASCII text
        # (None when none is shown to match as it does: `folded_twin`).
        self._subsets: dict[tuple[int, ...], tuple[re.Pattern[str], re.Pattern[str] | None]] = {}
        # Every (piece, alternative) pair, and the alternatives with no piece (always searched).
        self._flat = tuple((a, i) for i, p in enumerate(self._pieces) if p is not None for a in p)
        self._always = frozenset(i for i, p in enumerate(self._pieces) if p is None)
        self._lowered = self._twin(pattern)

    @staticmethod
    def _twin(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
        return folded_twin(pattern)

    def _haystack(self, text: str, low: str | None) -> str | None:
        """The text the anchors are looked for in, or None when they cannot be used."""
        if not self.folded:
            return text
        if not text.isascii():
            return None
        return text.lower() if low is None else low

    def may_match(self, text: str, low: str | None = None) -> bool:
        """False only when the pattern cannot match `text` (`low` is `text.lower()` when the
        caller has it)."""
        found = self.anchors
        if found is None:
            return True
        hay = self._haystack(text, low)
        if hay is None:
            return True
        for piece in found:  # noqa: SIM110 - a plain loop: no generator on the hot path
            if piece in hay:
                return True
        return False

    def _narrowed(
        self, text: str, low: str | None
    ) -> tuple[re.Pattern[str], re.Pattern[str] | None, str | None] | None:
        """The pattern to search `text` with (the whole one, or the alternatives whose anchors
        occur), its plain twin and the lower-cased text to run that on when it can be used;
        None when nothing can match."""
        if not self._pieces:
            return self._whole(text, low)
        hay = self._haystack(text, low)
        if hay is None:
            return self.pattern, None, None
        found = self.anchors
        if found is not None:
            for piece in found:
                if piece in hay:
                    break
            else:
                return None
        if not self._narrow:
            return self.pattern, self._lowered, hay if self.folded else None
        hits = {i for piece, i in self._flat if piece in hay}
        present = tuple(sorted(hits | self._always if self._always else hits))
        if not present:
            return None
        if len(present) == len(self._pieces):
            return self.pattern, self._lowered, hay if self.folded else None
        sub = self._subsets.get(present)
        if sub is None:
            if len(self._subsets) >= self._MAX_SUBSETS:
                self._subsets.clear()
            compiled = re.compile("|".join(self._alternatives[i] for i in present),
                                  self.pattern.flags)
            sub = self._subsets[present] = (compiled, self._twin(compiled))
        return sub[0], sub[1], hay if self.folded else None

    def _whole(
        self, text: str, low: str | None
    ) -> tuple[re.Pattern[str], re.Pattern[str] | None, str | None]:
        if self._lowered is None or not text.isascii():
            return self.pattern, None, None
        return self.pattern, self._lowered, text.lower() if low is None else low

    def search(self, text: str, low: str | None = None) -> re.Match[str] | None:
        """`pattern.search(text)`; `low` is `text.lower()` when the caller has it.

        On ASCII text a case-folding pattern is run as its plain twin over the lower-cased
        text, and the match found is made again at its start with the pattern itself, so
        that the caller gets the very match (groups, offsets, text) the pattern gives."""
        chosen = self._narrowed(text, low)
        if chosen is None:
            return None
        pattern, twin, hay = chosen
        if twin is None or hay is None:
            return pattern.search(text)
        m = twin.search(hay)
        if m is None:
            return None
        again = pattern.match(text, m.start())
        if again is None or again.end() != m.end():
            return pattern.search(text)  # not expected (`folded_twin`); safe anyway
        return again

    def finditer(self, text: str, low: str | None = None) -> Iterator[re.Match[str]]:
        """The matches `pattern.finditer(text)` gives, in order (their group numbers may
        differ: a caller reads which group matched, not its number)."""
        chosen = self._narrowed(text, low)
        if chosen is None:
            return iter(())
        pattern, twin, hay = chosen
        if twin is None or hay is None:
            return pattern.finditer(text)
        return self._rematched(pattern, twin, hay, text)

    @staticmethod
    def _rematched(
        pattern: re.Pattern[str], twin: re.Pattern[str], hay: str, text: str
    ) -> Iterator[re.Match[str]]:
        """The twin's matches over `hay`, each made again with `pattern` over `text` (the
        whole pattern's own matches if any differs, which `folded_twin` rules out)."""
        found = []
        for m in twin.finditer(hay):
            again = pattern.match(text, m.start())
            if again is None or again.span() != m.span():
                return pattern.finditer(text)
            found.append(again)
        return iter(found)
