"""Waitlists: freed capacity goes to the first waiting entries that fit, as offer holds.

Interface used by every path that frees capacity (cancel, expiry, a move to another
mission): call ``waitlist_offer_freed_capacity`` inside the same transaction, while holding
the slot class's row lock, after the counters were lowered. The offer holds it places take
the freed capacity at once, so no new hold can get it first.
"""

from __future__ import annotations

from datetime import datetime

from marketplace.models import SlotClass


def waitlist_offer_freed_capacity(slot_class: SlotClass, *, now: datetime) -> int:
    """Offer the class's free capacity to its waiting entries, in order. The caller holds the
    class's row lock and passes the locked instance (its counters current). Returns how
    many offers were made. (Filled in by the waitlist work.)"""
    return 0
