"""Structured logs: with MOONSLOT_LOG_FORMAT=json every record is one JSON object per line,
and a record about a booking names its reference."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from bookings import services
from bookings.models import Booking
from bookings.services import Actor
from config.logging import logging_config
from tests.factories import ResellerFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """Logging configured as MOONSLOT_LOG_FORMAT=json configures it, its console handler
    writing to a buffer; gives a function returning the JSON lines written since the last
    call."""
    logging.config.dictConfig(logging_config(fmt="json", level="INFO"))
    (console,) = logging.getLogger().handlers
    assert isinstance(console, logging.StreamHandler)
    buffer = io.StringIO()
    console.setStream(buffer)

    def lines() -> list[dict[str, Any]]:
        written = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return [json.loads(line) for line in written.splitlines()]

    try:
        yield lines
    finally:
        logging.config.dictConfig(settings.LOGGING)


def _hold() -> Booking:
    return services.booking_hold(
        slot_class_id=SlotClassFactory.create().pk,
        organisation=ResellerFactory.create(),
        channel="api",
        actor=Actor.system("test"),
        currency="JPY",
        mass_g=1000,
    )


def test_a_hold_logs_one_json_line_naming_the_booking(json_logs: Any) -> None:
    booking = _hold()
    held = [line for line in json_logs() if line["logger"] == "bookings.services"]
    assert len(held) == 1
    (line,) = held
    assert line["booking"] == booking.reference
    assert line["message"] == f"booking {booking.reference} held"
    assert line["level"] == "INFO"
    assert line["time"].endswith("Z")


def test_a_booking_passed_to_a_log_call_puts_its_reference_on_the_line(json_logs: Any) -> None:
    booking = _hold()
    json_logs()  # what the hold wrote
    logger = logging.getLogger("tests.reliability")
    logger.warning("payment for %s failed", booking)
    logger.warning("nothing about a booking")
    first, second = json_logs()
    assert first["booking"] == booking.reference
    assert "booking" not in second


def test_an_exception_is_part_of_its_line(json_logs: Any) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tests.reliability").exception("it failed")
    (line,) = json_logs()
    assert line["message"] == "it failed"
    assert "ValueError: boom" in line["exception"]


def _log_one_line(log_format: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MOONSLOT_LOG_FORMAT"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    if log_format is not None:
        env["MOONSLOT_LOG_FORMAT"] = log_format
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('moonslot.check').warning('hello %s', 'there')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_the_environment_switches_the_site_to_json_lines() -> None:
    result = _log_one_line("json")
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stderr.splitlines() if text.startswith("{")]
    assert line["logger"] == "moonslot.check"
    assert line["message"] == "hello there"


def test_plain_lines_by_default() -> None:
    result = _log_one_line(None)
    assert result.returncode == 0, result.stderr
    assert "WARNING moonslot.check hello there" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_an_unknown_log_format_stops_the_process() -> None:
    result = _log_one_line("xml")
    assert result.returncode != 0
    assert "MOONSLOT_LOG_FORMAT" in result.stderr
