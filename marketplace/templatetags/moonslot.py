"""Catalogue filters: money, mass, counts, dates and the per-class figures the pages show.

They run once per row on list pages of fifty missions, so each is a few integer operations
and no query: prices come from the ``prices`` prefetch, availability from the selector's
annotation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime

from django import template
from django.utils import formats, timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, gettext, ngettext

from marketplace.models import Channel, SlotClass
from marketplace.money import Currency, Money, format_mass

register = template.Library()

# Order in which prices are listed; a currency the class does not offer is left out.
DISPLAY_CURRENCIES = (Currency.JPY.value, Currency.USD.value)


@register.filter
def money(value: Money | int | None, currency: str | None = None) -> str:
    """``{{ price|money }}`` for a Money, ``{{ amount|money:"JPY" }}`` for minor units."""
    if value is None or value == "":
        return ""
    if isinstance(value, Money):
        return value.format()
    if currency is None:
        return ""
    return Money(int(value), currency).format()


@register.filter
def mass(value: int | None) -> str:
    """Integer grams as a person reads them: 250 g, 2.5 kg."""
    if value is None or value == "":
        return ""
    return format_mass(int(value))


@register.filter
def count(value: int | None) -> str:
    """A whole number with thousands separators (the same in English and Japanese)."""
    if value is None or value == "":
        return ""
    return f"{int(value):,}"


@functools.lru_cache(maxsize=8192)
def _format_day(value: date, language: str) -> str:
    # ``language`` is the active language, passed only so each one caches its own text.
    return formats.date_format(value, "DATE_FORMAT")


@register.filter
def day(value: datetime | None) -> str:
    """The calendar day in the active language's format (site time, UTC). Django's formatter
    parses its format string on every call; a list shows the same few hundred days on every
    request, so the text is remembered per day and language."""
    if value is None:
        return ""
    return _format_day(timezone.localtime(value).date(), get_language() or "en")


@register.filter
def moment(value: datetime | None) -> str:
    """Day and time in the active language's format (site time, UTC)."""
    if value is None:
        return ""
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


@dataclass(frozen=True, slots=True)
class PriceLine:
    currency: str
    rate: Money
    starting: Money
    rate_text: str
    starting_html: SafeString


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """What a page shows for one slot class, worked out once in Python: a template building
    the same text with ``blocktranslate`` costs several times as much on a 50-mission list."""

    percent: str
    state: str
    left: str
    left_mass: str
    prices: tuple[PriceLine, ...]


def available_percent(slot_class: SlotClass) -> int:
    """Share of the class still free, 0–100, for the width of the capacity bar. A class with
    anything left shows at least a sliver, so "almost gone" never reads as "sold out"."""
    if slot_class.is_per_unit and slot_class.capacity_units:
        available, capacity = slot_class.available_units or 0, slot_class.capacity_units
    else:
        available, capacity = slot_class.available_g, slot_class.capacity_g
    if capacity <= 0 or available <= 0:
        return 0
    return max(1, min(100, available * 100 // capacity))


def _price_lines(slot_class: SlotClass) -> tuple[PriceLine, ...]:
    lines = []
    for currency in DISPLAY_CURRENCIES:
        rate = slot_class.price_for(currency)
        if rate is None:
            continue
        starting = slot_class.total_price(
            currency=currency, mass_g=slot_class.min_mass_g, quantity=slot_class.min_quantity
        )
        if slot_class.is_per_unit:
            units = slot_class.min_quantity or 1
            rate_text = gettext("%(rate)s per unit") % {"rate": rate.format()}
            template = ngettext(
                "from <strong>%(price)s</strong> for %(units)s unit",
                "from <strong>%(price)s</strong> for %(units)s units",
                units,
            )
            values = {"price": starting.format(), "units": f"{units:,}"}
        else:
            rate_text = gettext("%(rate)s per kg") % {"rate": rate.format()}
            template = gettext("from <strong>%(price)s</strong> for %(minimum)s")
            values = {"price": starting.format(), "minimum": format_mass(slot_class.min_mass_g)}
        # The translation carries the markup; only the values are escaped into it.
        starting_html = mark_safe(template % {k: escape(v) for k, v in values.items()})  # noqa: S308
        lines.append(PriceLine(currency, rate, starting, rate_text, starting_html))
    return tuple(lines)


@register.filter
def figures(slot_class: SlotClass) -> ClassFigures:
    """Capacity bar, capacity text and prices of one class (no query: prices and
    availability come from the selector's prefetch and annotation)."""
    percent = available_percent(slot_class)
    state = "sold-out" if percent == 0 else ("low" if percent < 15 else "")
    mass_left = {
        "available": format_mass(slot_class.available_g),
        "capacity": format_mass(slot_class.capacity_g),
    }
    if slot_class.is_per_unit:
        capacity_units = slot_class.capacity_units or 0
        left = ngettext(
            "%(available)s of %(capacity)s unit left",
            "%(available)s of %(capacity)s units left",
            capacity_units,
        ) % {"available": f"{slot_class.available_units or 0:,}", "capacity": f"{capacity_units:,}"}
        left_mass = gettext("(%(available)s of %(capacity)s)") % mass_left
    else:
        left = gettext("%(available)s of %(capacity)s left") % mass_left
        left_mass = ""
    return ClassFigures(f"{percent}", state, left, left_mass, _price_lines(slot_class))


@register.filter
def channel_labels(slot_class: SlotClass) -> list[str]:
    return [str(Channel(value).label) for value in slot_class.channels]
