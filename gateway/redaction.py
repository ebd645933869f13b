"""Keep secrets and message contents out of the logs.

Every log record, from any library, has bearer tokens, key-shaped secrets (`sk-...`, `gw-...`) and the
configured upstream and admin keys replaced before any handler sees it. Libraries that log SQL parameters
or bodies at DEBUG (SQLAlchemy, aiosqlite, the SQLite lane, asyncpg, httpcore, aiohttp) stay at WARNING unless
GATEWAY_LOG_CONTENT is set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from gateway.config import Settings

REDACTED = "[redacted]"
BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
KEY_SHAPED = re.compile(r"\b(sk|gw)-[A-Za-z0-9_\-]{8,}")
ALWAYS_QUIET = ("httpx", "alembic")
CONTENT_LOGGERS = (
    "sqlalchemy",
    "aiosqlite",
    "gateway.sqlite",
    "asyncpg",
    "httpcore",
    "aiohttp",
    "hpack",
    "multipart",
)


class Redactor:
    """Replaces secrets in a text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def clean(self, text: str) -> bool:
        """True when `text` holds nothing to redact: no configured secret, no literal either pattern needs."""
        return not _suspect(text) and not any(secret in text for secret in self.secrets)

    def __call__(self, text: str) -> str:
        """The text with every secret replaced by [redacted]."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if not _suspect(text):
            return text
        text = BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        return KEY_SHAPED.sub(lambda m: f"{m.group(1)}-{REDACTED}", text)


def _suspect(text: str) -> bool:
    """False when neither BEARER nor KEY_SHAPED can match `text`: each needs its literal (`bearer`, any case,
    or `sk-`, `gw-`). Substring tests, some fifteen times cheaper than a case-blind search of the text, clear
    almost every text logged (every access-log field, at every request)."""
    return "sk-" in text or "gw-" in text or "bearer" in text.lower()


def _redacting_factory(
    previous: Callable[..., logging.LogRecord], redact: Redactor
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed format string: leave it to the handler to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    return factory


class FieldRedactor(logging.Filter):
    """Redacts the structured `fields` a record carries (set after the record factory has run)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace secrets in the text values of `record.fields`; never drops a record."""
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict):
            return True
        # One look at all the texts together clears almost every record. Each text is a part of the joined
        # one, so a clean whole means clean parts; a secret found across two texts only costs the slow path.
        if self.redact.clean("\0".join([v for v in fields.values() if isinstance(v, str)])):
            return True
        record.fields = {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


def protect_logs(settings: Settings) -> None:
    """Install the redaction on every log record and quiet the libraries that log content (idempotent).

    Call it after the handlers are set up: the structured fields are redacted by a filter on each handler.
    """
    redact = Redactor([settings.upstream_api_key, settings.admin_key])
    current = logging.getLogRecordFactory()
    if not getattr(current, "redacting", False):
        logging.setLogRecordFactory(_redacting_factory(current, redact))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, FieldRedactor) for f in handler.filters):
            handler.addFilter(FieldRedactor(redact))
    quiet = ALWAYS_QUIET if settings.log_content else ALWAYS_QUIET + CONTENT_LOGGERS
    for name in quiet:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
