"""A linear MIME splitter that builds the same compat32 `Message` tree as the standard library's
`email.message_from_bytes(raw, policy=compat32)`, at a fraction of its cost.

The standard parser is a chain of generators reading one line at a time through a buffered
file, and compiles a boundary pattern for every multipart; on bounce reports it was a third of
the classifier's time. This module walks a list of lines with an index instead, and tests a
boundary with `str.startswith` and one fixed pattern. What it builds is meant to be identical
(headers, unix-from, payloads, preamble and epilogue, the default type inside a digest), which
`tests/unit/bounces/test_bounce_mime_split.py` checks against the standard parser over the
corpus and generated messages. Two deliberate differences: parsing defects are not recorded
(nothing here reads them), and a part nested deeper than MAX_NESTING is kept as text instead of
being parsed further (the standard parser recurses until Python's stack runs out).

Every step moves forward through the lines or looks at one line, so the work is linear in the
size of the message.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from email._policybase import compat32
from email.message import Message
from io import StringIO

MAX_NESTING = 100  # parts deeper than this are text; `mime.walk` reads only 40 levels anyway

# What the standard parser takes for a header line, a continuation or a unix-from line.
_HEADER_RE = re.compile(r"(?:From |[\041-\071\073-\176]*:|[\t ])")


def _is_header_line(line: str) -> bool:
    """`_HEADER_RE.match(line)`, without the regex: a continuation, "From ", or a name of
    printable ASCII without space (\\041-\\176 but ":") up to the first colon."""
    lead = line[0]
    if lead == " " or lead == "\t":
        return True
    colon = line.find(":")
    if colon >= 0:
        name = line[:colon]
        if name.isascii() and name.isprintable() and " " not in name:
            return True
    return line.startswith("From ")


# After "--boundary": an optional closing "--", blanks, an optional line end, nothing more.
_BOUNDARY_TAIL_RE = re.compile(r"(?P<end>--)?[ \t]*(?P<linesep>\r\n|\r|\n)?$")
_EOL = ("\r\n", "\r", "\n")
# The part attribute `mime.content_type` keeps a part's content type under.
CONTENT_TYPE_KEY = "_postway_ctype"
_BLANK = ""  # eof marker meaning "a blank line ends this block" (delivery-status blocks)
# Line ends str.splitlines knows besides \n (the text holds no others: it is ASCII with
# surrogates for the other bytes).
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e")


def _lines(text: str) -> list[str]:
    """The lines of `text` with their ends, split at \\r\\n, \\r and \\n as the standard parser
    splits them (StringIO with newline=""); by str.splitlines, in C, when the text holds no
    other character that it also takes for a line end."""
    if any(brk in text for brk in _OTHER_BREAKS):
        return StringIO(text, newline="").readlines()
    return text.splitlines(keepends=True)


def _strip_eol(text: str) -> str:
    """`text` without one trailing line end (\\r\\n, \\r or \\n)."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\r", "\n")):
        return text[:-1]
    return text


def _boundary_match(line: str, separator: str) -> re.Match[str] | None:
    if not line.startswith(separator):
        return None
    return _BOUNDARY_TAIL_RE.match(line, len(separator))


class _Splitter:
    """One parse: the lines, where we are, the lines given back, and the stack of markers
    (boundaries, or _BLANK) any one of which ends the part being read."""

    __slots__ = ("lines", "pos", "back", "ends", "last", "marks")

    def __init__(self, text: str) -> None:
        self.lines = _lines(text)
        # The lines that may end a part (a boundary starts with "-", a blank line with a line
        # end), so that a part's body is found by looking at these only.
        self.marks = [i for i, line in enumerate(self.lines) if line[0] in "-\r\n"]
        self.pos = 0
        self.back: list[str] = []
        self.ends: list[str] = []
        self.last: Message | None = None

    def readline(self) -> str:
        """The next line, or "" at the end of the input or of the current part (the line that
        ends the part is left to be read again)."""
        if self.back:
            line = self.back.pop()
            if not line:
                return ""  # an end given back stays an end
        elif self.pos < len(self.lines):
            line = self.lines[self.pos]
            self.pos += 1
        else:
            return ""
        if self.ends and line[0] in "-\r\n" and self._ends_part(line):
            self.back.append(line)
            return ""
        return line

    def _ends_part(self, line: str) -> bool:
        for marker in self.ends:
            if marker is _BLANK:
                if line[0] in "\r\n":
                    return True
            elif _boundary_match(line, marker):
                return True
        return False

    def unread(self, line: str) -> None:
        self.back.append(line)

    def rest(self) -> list[str]:
        """The lines up to the end of the current part (or of the input)."""
        out: list[str] = []
        while self.back:
            line = self.readline()
            if not line:
                return out
            out.append(line)
        start = self.pos
        stop = len(self.lines)
        if self.ends:
            for i in self.marks[bisect_left(self.marks, start):]:
                if self._ends_part(self.lines[i]):
                    stop = i
                    break
        out += self.lines[start:stop]
        self.pos = stop
        return out

    # --- a message: headers, then a body by its content type ---------------------------------

    def message(self, parent: Message | None, depth: int, parent_type: str = "") -> Message:
        msg = Message(policy=compat32)
        if parent is not None:
            if parent_type == "multipart/digest":
                msg.set_default_type("message/rfc822")
            parent.attach(msg)
        self.last = msg
        self._headers(msg, self._header_lines())
        ctype = _content_type(msg)
        # Kept where `mime.content_type` looks first: the readers of a report ask every part.
        msg.__dict__[CONTENT_TYPE_KEY] = ctype.split()[0] if ctype else "text/plain"
        if depth >= MAX_NESTING:
            msg.set_payload("".join(self.rest()))
            return msg
        if ctype == "message/delivery-status":
            self._status_blocks(msg, depth, ctype)
        elif ctype.startswith("message/"):
            self.message(msg, depth + 1, ctype)
        elif ctype.startswith("multipart/"):
            self._multipart(msg, depth, ctype)
        else:
            msg.set_payload("".join(self.rest()))
        return msg

    def _header_lines(self) -> list[str]:
        """The header lines of the part starting here; the blank line after them is read, a
        line that is no header is left as the body's first."""
        headers: list[str] = []
        while self.back:  # lines given back are read one by one
            line = self.readline()
            if not line:
                return headers
            if not _is_header_line(line):
                if line[0] not in "\r\n":
                    self.unread(line)  # no blank line: this line starts the body
                return headers
            headers.append(line)
        lines, i, ends, match = self.lines, self.pos, self.ends, _is_header_line
        while i < len(lines):
            line = lines[i]
            if ends and line[0] in "-\r\n" and self._ends_part(line):
                break  # the part ends here: the line is left for the part around it
            if not match(line):
                if line[0] in "\r\n":
                    i += 1
                break
            headers.append(line)
            i += 1
        self.pos = i
        return headers

    def _headers(self, msg: Message, lines: list[str]) -> None:
        # compat32's set_raw appends (name, value) as given (its header_store_parse returns
        # both unchanged) and header_source_parse joins a header's lines after its colon:
        # both done here directly, in one pass over the lines.
        # typeshed declares none of Message's private attributes (_headers, _payload): hence
        # the attr-defined ignores here and below
        headers = msg._headers  # type: ignore[attr-defined]  # noqa: SLF001
        name: str | None = None
        value = ""
        more: list[str] = []
        for number, line in enumerate(lines):
            lead = line[0]
            if lead == " " or lead == "\t":
                if name is not None:
                    more.append(line)
                continue  # a continuation with no header before it is dropped
            if name is not None:
                if more:
                    value += "".join(more)
                    more = []
                headers.append((name, value.rstrip("\r\n")))
                name = None
            if lead == "F" and line.startswith("From "):
                if number == 0:
                    msg.set_unixfrom(_strip_eol(line))
                elif number == len(lines) - 1:
                    self.unread(line)  # most likely the body's first line
                    return
                continue
            if lead == ":":
                continue  # no header name
            name, _, value = line.partition(":")
            value = value.lstrip(" \t")
        if name is not None:
            if more:
                value += "".join(more)
            headers.append((name, value.rstrip("\r\n")))

    def _status_blocks(self, msg: Message, depth: int, ctype: str) -> None:
        """message/delivery-status: blocks of fields, each a header-only message, separated
        by one blank line (a second blank line makes an empty block)."""
        while True:
            self.ends.append(_BLANK)
            self.message(msg, depth + 1, ctype)
            self.ends.pop()
            self.readline()  # the blank line (or "" at the part's end)
            line = self.readline()
            if not line:
                return
            self.unread(line)

    def _multipart(self, msg: Message, depth: int, ctype: str) -> None:
        boundary = msg.get_boundary()
        if boundary is None:
            msg.set_payload("".join(self.rest()))
            return
        separator = "--" + boundary
        preamble: list[str] = []
        in_preamble = True
        closed = False
        closing_eol: str | None = None
        while line := self.readline():
            found = _boundary_match(line, separator)
            if found is None:
                preamble.append(line)  # only the preamble is read here; parts read themselves
                continue
            if found.group("end"):
                closed, closing_eol = True, found.group("linesep")
                break
            if in_preamble:
                if preamble:
                    preamble[-1] = _strip_eol(preamble[-1])
                    msg.preamble = "".join(preamble)
                in_preamble = False
                self.unread(line)
                continue
            # Repeated boundary lines make no empty parts.
            while True:
                line = self.readline()
                if _boundary_match(line, separator) is None:
                    self.unread(line)
                    break
            self.ends.append(separator)
            self.message(msg, depth + 1, ctype)
            self._trim_last()
            self.ends.pop()
            self.last = msg
        if in_preamble:
            msg.set_payload("".join(preamble))
            self.rest()
            msg.epilogue = ""
            return
        if not closed:
            return
        epilogue = ([""] if closing_eol else []) + self.rest()
        if epilogue:
            first = epilogue[0]
            for eol in _EOL:
                if first.startswith(eol):
                    epilogue[0] = first[len(eol):]
                    break
        msg.epilogue = "".join(epilogue)

    def _trim_last(self) -> None:
        """RFC 2046: the line end before a boundary belongs to the boundary, so it is cut from
        the message created last (a part's text, or a nested multipart's epilogue)."""
        last = self.last
        if last is None:
            return
        if last.__dict__[CONTENT_TYPE_KEY].startswith("multipart/"):  # its maintype, read once
            if last.epilogue == "":
                last.epilogue = None
            elif last.epilogue is not None:
                last.epilogue = _strip_eol(last.epilogue)
        elif isinstance(last._payload, str):  # type: ignore[attr-defined]  # noqa: SLF001
            # what the standard parser trims
            last._payload = _strip_eol(last._payload)  # type: ignore[attr-defined]  # noqa: SLF001


def _content_type(msg: Message) -> str:
    """`msg.get_content_type()`, read straight from the header list when the value is ASCII
    (compat32 hands such a value back unchanged; other values go the standard way)."""
    # read only, as Message.get reads it (typeshed does not declare the private list)
    for name, value in msg._headers:  # type: ignore[attr-defined]  # noqa: SLF001
        if name.lower() == "content-type":
            if not (isinstance(value, str) and value.isascii()):
                return msg.get_content_type()
            ctype = value.partition(";")[0].strip().lower()
            return ctype if ctype.count("/") == 1 else "text/plain"
    return msg.get_default_type()


def split_message(raw: bytes) -> Message:
    """Parse `raw` as `email.message_from_bytes(raw, policy=compat32)` would."""
    text = raw.decode("ascii", "surrogateescape")
    splitter = _Splitter(text)
    return splitter.message(None, 0)
