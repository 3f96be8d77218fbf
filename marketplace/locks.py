"""Row locks of the catalogue.

Lock order across the project, to rule out deadlocks: mission → slot class → organisation →
booking. A code path may skip a level but never takes an earlier one after a later one.
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
    return SlotClass.objects.order_by("pk").select_for_update(of=("self",))
