"""Public catalogue pages: the mission list and a mission's page with its instant quote.

Both read through ``marketplace.selectors`` so every figure (availability, prices, schedule
history) comes from a fixed number of queries however many missions and classes there are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from marketplace import selectors
from marketplace.cache import UNCACHED_FRAGMENTS, cache_seconds, catalogue_cached
from marketplace.forms import MassUnit, QuoteForm
from marketplace.models import Mission, MissionStatus, SlotClass
from marketplace.money import Currency
from marketplace.page_cache import anonymous_page_cache

# Quotes are offered while a mission can still be sold; once sales close a price would only
# mislead.
QUOTABLE_STATUSES = (MissionStatus.PLANNED, MissionStatus.ON_SALE)


@dataclass(frozen=True, slots=True)
class ClassPanel:
    """One slot class on the mission page with the quote form shown beside it."""

    slot_class: SlotClass
    form: QuoteForm
    submitted: bool


def preferred_currency(language: str) -> str:
    """The currency a visitor reading ``language`` is offered first (yen in Japanese)."""
    return Currency.JPY if language.startswith("ja") else Currency.USD


@anonymous_page_cache("mission-list")
def mission_list(request: HttpRequest) -> HttpResponse:
    # Lazy, not even a queryset yet: the template evaluates it only if its cached fragment is
    # stale, and building the annotated queryset alone costs more than serving the cached page.
    now = timezone.now()
    missions = SimpleLazyObject(lambda: selectors.mission_list(now=now))
    return render(request, "marketplace/mission_list.html", {"missions": missions})


_DETAIL_KEYS = ("mission", "panels", "schedule_changes", "bookable", "quotable", "quote_error")


@anonymous_page_cache("mission-detail")
def mission_detail(request: HttpRequest, code: str) -> HttpResponse:
    now = timezone.now()
    if cache_seconds() > 0 and "slot_class" not in request.GET:
        # Nothing visitor-specific (no quote asked for): the page's fragments may come from
        # the catalogue cache, so its context is built only if one of them is stale. Whether
        # the mission exists is cached too (a 404 must not wait for the template).
        exists = catalogue_cached(
            "mission-exists",
            (code,),
            lambda: Mission.objects.filter(code=code).exists(),
            request=request,
        )
        if not exists:
            raise Http404(_("No mission has that code."))
        built = functools.cache(lambda: _detail_context(request, code, now))
        lazy = {key: SimpleLazyObject(functools.partial(_item, built, key)) for key in _DETAIL_KEYS}
        context: dict[str, object] = {"mission_code": code, **lazy}
    else:
        # A quote is this visitor's own: the fragments around it are not shared either way.
        context = {
            "mission_code": code,
            UNCACHED_FRAGMENTS: True,
            **_detail_context(request, code, now),
        }
    return render(request, "marketplace/mission_detail.html", context)


def _item(built: Callable[[], dict[str, object]], key: str) -> object:
    return built()[key]


def _detail_context(request: HttpRequest, code: str, now: datetime) -> dict[str, object]:
    try:
        mission = selectors.mission_detail(code=code, now=now)
    except Mission.DoesNotExist:
        raise Http404(_("No mission has that code.")) from None
    slot_classes = list(mission.slot_classes.all())
    quotable = mission.status in QUOTABLE_STATUSES and now < mission.booking_cutoff

    requested = request.GET.get("slot_class") if quotable else None
    quote_error = ""
    if requested is not None and not any(str(sc.pk) == requested for sc in slot_classes):
        quote_error = _("That slot class is not sold on this mission. Choose one below.")

    panels = []
    for slot_class in slot_classes:
        submitted = requested == str(slot_class.pk)
        form = QuoteForm(
            request.GET if submitted else None,
            slot_class=slot_class,
            initial=_initial_quote(slot_class),
            auto_id=f"quote-{slot_class.pk}-%s",
        )
        if submitted:
            form.is_valid()
        panels.append(ClassPanel(slot_class=slot_class, form=form, submitted=submitted))

    return {
        "mission": mission,
        "panels": panels,
        "schedule_changes": list(mission.schedule_changes.all()),
        "bookable": mission.is_bookable(now),
        "quotable": quotable,
        "quote_error": quote_error,
    }


def _initial_quote(slot_class: SlotClass) -> dict[str, object]:
    offered = [price.currency for price in slot_class.prices.all()]
    preferred = preferred_currency(get_language() or "")
    currency = preferred if preferred in offered else (offered[0] if offered else None)
    unit = MassUnit.KG if slot_class.min_mass_g >= 1000 else MassUnit.G
    return {"slot_class": slot_class.pk, "currency": currency, "unit": unit}
