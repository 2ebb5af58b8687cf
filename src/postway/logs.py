"""Logging set-up: readable lines on a terminal, JSON lines otherwise (or as configured),
each carrying the delivery id, message id and other context given as `extra=`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
FORMATS = ("auto", "text", "json")


def context_of(record: logging.LogRecord) -> dict[str, object]:
    """The fields a caller added with `extra=` (delivery_id, message_id, state, ...)."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(context_of(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)  # quoted, with escapes: one line whatever the value holds
    return text


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message key=value ...`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        context = " ".join(f"{k}={_value(v)}" for k, v in context_of(record).items())
        if context:
            line = f"{line}  {context}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def chosen_format(fmt: str, stream: TextIO) -> str:
    """`text` or `json`: `auto` is text when the stream is a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream: machines read it
        return "json"


def setup_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Log to `stream` (standard error by default) in the format chosen (see FORMATS)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    if chosen_format(fmt, out) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
