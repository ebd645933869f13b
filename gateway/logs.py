"""Logging set up in one place: text lines or JSON lines on stderr, for the gateway and uvicorn alike.

A record may carry structured fields as `extra={"fields": {...}}` (the access log does): JSON lines put them
at the top level, text lines append them as `key=value`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Printable ASCII but space, '"', '=' and '\\': such a text value needs no quotes after `key=`.
_PLAIN = re.compile(r"[!#-<>-\[\]-~]+")
# Every character a line-splitting reader may take for a line break (str.splitlines, JavaScript, Unicode):
# escaped in every field and message, so no logged value can start a line of its own.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Chatty libraries whose INFO lines would drown the gateway's own.
QUIET = ("httpx", "httpcore", "alembic")


def escape_line_breaks(text: str) -> str:
    """`text` with every line-break character written as a JSON-style escape (`\\n`, `\\u2028`, ...)."""
    if text.isprintable():  # (every line break is a control or separator character: none is printable)
        return text
    return _LINE_BREAKS.sub(lambda m: json.dumps(m.group())[1:-1], text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class _Seconds:
    """A record's time to the second, as `strftime` writes it, made once per second: every line of a second
    shares that text, and a busy gateway writes hundreds."""

    __slots__ = ("convert", "last", "pattern")

    def __init__(self, pattern: str, convert: Callable[[float | None], time.struct_time]) -> None:
        self.pattern = pattern
        self.convert = convert
        self.last: tuple[int, str] = (-1, "")  # one tuple, replaced whole: a thread never sees half of it

    def __call__(self, created: float) -> str:
        second = int(created)
        last = self.last
        if second != last[0]:
            last = self.last = (second, time.strftime(self.pattern, self.convert(created)))
        return last[1]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a compact JSON line."""
        line: dict[str, Any] = {
            "time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # JSON escapes the C0 controls; U+0085, U+2028 and U+2029 it leaves raw, so escape them too.
        return escape_line_breaks(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str))


class TextFormatter(logging.Formatter):
    """The classic `time LEVEL logger message` line, with the record's fields as `key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._seconds = _Seconds(self.default_time_format, self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """`logging.Formatter`'s own text (local time, `YYYY-MM-DD HH:MM:SS,mmm`), its seconds made once."""
        if datefmt:
            return super().formatTime(record, datefmt)
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message line, fields appended; values with spaces or quotes are JSON-quoted."""
        text = escape_line_breaks(super().formatMessage(record))
        fields = _fields(record)
        if not fields:
            return text
        pairs = [f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None]
        return " ".join([text, *pairs])

    def format(self, record: logging.LogRecord) -> str:
        """The line, then any traceback: its own lines stay (`\\n`), every other line break is escaped."""
        text = super().format(record)
        if "\n" not in text:  # no traceback or stack: formatMessage has escaped the whole line already
            return text
        return "\n".join(escape_line_breaks(line) for line in text.split("\n"))


def _text_value(value: Any) -> str:
    kind = type(value)
    if kind is int:  # (a status: the commonest field after the texts)
        return str(value)
    if kind is str or isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else escape_line_breaks(json.dumps(value, ensure_ascii=False))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Send every log record (the gateway's and uvicorn's) to stderr in the chosen format, at `level`."""
    # What no line of ours shows is not gathered for each record (the logging HOWTO's "Optimization"): the
    # caller's file and line (a walk up the stack), the thread, the process id (a system call) and its name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's own handlers are not installed (log_config=None): its records reach ours.
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False  # the gateway writes its own access log (gateway.access)
