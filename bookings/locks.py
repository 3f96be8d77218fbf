"""Row locks of the booking engine. Lock order (see marketplace/locks.py): mission → slot
class → organisation → booking; a path may skip levels but never goes back up."""

from django.db.models import QuerySet

from accounts.models import Organisation
from bookings.models import Booking


def booking_qs_for_update() -> QuerySet[Booking]:
    return Booking.objects.order_by("pk").select_for_update(of=("self",))


def organisation_qs_for_update() -> QuerySet[Organisation]:
    # FOR NO KEY UPDATE, as the slot class's (marketplace/locks.py says why).
    return Organisation.objects.order_by("pk").select_for_update(of=("self",), no_key=True)
