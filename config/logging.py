"""Structured logs: one JSON object per line for a log shipper (``MOONSLOT_LOG_FORMAT=json``),
plain lines for a person at a terminal (the default), and two filters on every handler:

- ``BookingReference`` puts the booking's reference on the record as ``booking`` when a log
  call passes a booking (``extra={"booking": booking}`` or as an argument), so a booking's
  whole story can be found with one query in the log store;
- ``RedactSecrets`` rewrites anything that looks like a credential (a reseller API key, an
  ``Authorization`` header, a ``password=…`` pair) before any handler writes the record.

Nothing here logs request headers or bodies: the JSON line names a request by its method
and path only. The redaction is the second line of defence for code that logs them anyway.

Only the standard library is imported: settings import this module before Django is set up.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"

# (pattern, replacement): API keys keep their public prefix (it names the key in the admin).
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bmsk_([0-9a-f]{12})_[A-Za-z0-9_-]+"), rf"msk_\1_{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s,;'\"}]+"), rf"\1\2{REDACTED}"),
    (
        re.compile(
            r"(?i)(['\"]?(?:http_)?(?:authorization|proxy-authorization|cookie|x-api-key|"
            r"password\d?|passwd|secret|api[_-]?key|client_secret)['\"]?\s*[:=]\s*)"
            r"(['\"]?)[^'\"\s,;&}]+"
        ),
        rf"\1\2{REDACTED}",
    ),
]


def redact(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``[redacted]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_booking(value: object) -> bool:
    # Duck-typed: importing the model here would need the app registry, which logging
    # configuration runs before.
    meta = getattr(value, "_meta", None)
    return getattr(meta, "label", None) == "bookings.Booking"


class BookingReference(logging.Filter):
    """Sets ``record.booking`` to a reference: from ``extra={"booking": …}`` (a reference
    or a Booking) or, failing that, from the first Booking among the call's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        booking = getattr(record, "booking", None)
        if booking is None:
            args = record.args
            values = args.values() if isinstance(args, Mapping) else (args or ())
            booking = next((value for value in values if _is_booking(value)), None)
        if booking is not None:
            record.booking = str(getattr(booking, "reference", booking))
        return True


class RedactSecrets(logging.Filter):
    """Renders the message (and any traceback) once, redacted, so no handler or formatter
    downstream can write the raw text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    and when the record has them ``booking``, ``request`` (method and path only),
    ``status_code`` and ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        booking = getattr(record, "booking", None)
        if booking is not None:
            entry["booking"] = str(booking)
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "method"):
            entry["request"] = {"method": request.method, "path": getattr(request, "path", "")}
        status_code = getattr(record, "status_code", None)
        if isinstance(status_code, int):
            entry["status_code"] = status_code
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


FORMATS = ("plain", "json")


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` setting: one console handler in ``fmt`` ("plain" or "json") with
    both filters, the root logger at ``level``. Raises ``ValueError`` for another format,
    so a typo in the environment stops the process instead of logging unstructured."""
    if fmt not in FORMATS:
        raise ValueError(f"MOONSLOT_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "booking_reference": {"()": "config.logging.BookingReference"},
            "redact_secrets": {"()": "config.logging.RedactSecrets"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "config.logging.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["booking_reference", "redact_secrets"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
