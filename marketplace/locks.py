"""Row locks of the catalogue.

Lock order across the project, to rule out deadlocks: mission → slot class → organisation →
booking. A code path may skip a level but never takes an earlier one after a later one.

Slot classes and organisations are locked FOR NO KEY UPDATE: it excludes every other such
lock and any update of the row, but not the FOR KEY SHARE lock that the foreign-key check of
a row referencing it takes (Django's foreign keys are checked at commit: a booking, its
payload, events, outbox rows). So another transaction's commit never queues behind a
capacity lock, and a hold can write its rows first and lock the class last, for the capacity
check and the counters only. Code that locks these rows does it through these functions.
"""

from django.conf import settings
from django.db.models import QuerySet

from marketplace.models import Mission, SlotClass


def mission_qs_for_update() -> QuerySet[Mission]:
    return Mission.objects.order_by("pk").select_for_update(of=("self",))


def slot_class_qs_for_update() -> QuerySet[SlotClass]:
    # DISABLE_CAPACITY_LOCK exists only so a test can show the race the lock prevents.
    if settings.MOONSLOT_DISABLE_CAPACITY_LOCK:
        return SlotClass.objects.order_by("pk")
    return SlotClass.objects.order_by("pk").select_for_update(of=("self",), no_key=True)
