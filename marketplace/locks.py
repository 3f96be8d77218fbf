"""Row locks of the catalogue.

Lock order across the project, to rule out deadlocks: mission → slot class → organisation →
booking. A code path may skip a level but never takes an earlier one after a later one.

Slot classes and organisations are locked FOR NO KEY UPDATE: it excludes every other such
lock and any update of the row, but not the FOR KEY SHARE lock that the foreign-key check of
a row referencing it takes (Django's foreign keys are checked at commit: a booking, its
payload, events, outbox rows). So another transaction's commit never queues behind a
capacity lock. Code that locks these rows does it through these functions.
"""

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.db.transaction import TransactionManagementError

from marketplace.cache import catalogue_changed
from marketplace.models import Mission, SlotClass


def mission_qs_for_update() -> QuerySet[Mission]:
    return Mission.objects.order_by("pk").select_for_update(of=("self",))


def slot_class_qs_for_update() -> QuerySet[SlotClass]:
    # DISABLE_CAPACITY_LOCK exists only so a test can show the race the lock prevents.
    if settings.MOONSLOT_DISABLE_CAPACITY_LOCK:
        return SlotClass.objects.order_by("pk")
    return SlotClass.objects.order_by("pk").select_for_update(of=("self",), no_key=True)


def slot_class_counters_for_update(slot_class_id: int) -> tuple[int, int, int | None, int]:
    """``(capacity_g, taken_g, capacity_units, taken_units)`` of a class, read under its row
    lock (FOR NO KEY UPDATE, as ``slot_class_qs_for_update``). One hand-written statement:
    every hold runs it, and compiling the ORM's version cost more than running it. Raises
    ``SlotClass.DoesNotExist``; must run inside a transaction."""
    locking = (
        connection.features.has_select_for_no_key_update
        and not settings.MOONSLOT_DISABLE_CAPACITY_LOCK
    )
    if locking and not connection.in_atomic_block:
        raise TransactionManagementError("a row lock outside a transaction is released at once")
    table = connection.ops.quote_name(SlotClass._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            # The table name comes from model metadata, the id is a parameter.
            "SELECT capacity_g, taken_g, capacity_units, taken_units "  # noqa: S608
            f"FROM {table} WHERE id = %s{' FOR NO KEY UPDATE' if locking else ''}",
            [slot_class_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise SlotClass.DoesNotExist(f"no slot class {slot_class_id}")
    return int(row[0]), int(row[1]), None if row[2] is None else int(row[2]), int(row[3])


def slot_class_take_if_free(
    slot_class_id: int, *, mass_g: int, units: int, per_unit: bool
) -> tuple[int, int, int | None, int] | None:
    """Take ``mass_g`` (and, for a per-unit class, ``units``) of a class's capacity if its
    counters leave that much free: one guarded UPDATE, which checks and takes in the same
    statement and keeps the row locked (as FOR NO KEY UPDATE does) until the transaction
    ends. Returns the counters after it, as ``slot_class_counters_for_update`` reads them, or
    None, having changed nothing, when it does not fit by the counters (which still count
    lapsed holds not yet released: the caller then locks, releases them and checks again).
    Must run inside a transaction; None without trying when the lock is disabled. Like
    ``SlotClass.save_counters``, moves the catalogue cache on when the transaction commits."""
    if settings.MOONSLOT_DISABLE_CAPACITY_LOCK:
        return None
    if not connection.in_atomic_block:
        raise TransactionManagementError("capacity must be taken in the booking's transaction")
    table = connection.ops.quote_name(SlotClass._meta.db_table)
    units_fit = " AND taken_units + %s <= COALESCE(capacity_units, 0)" if per_unit else ""
    with connection.cursor() as cursor:
        cursor.execute(
            # The table name comes from model metadata, values are parameters.
            f"UPDATE {table} SET taken_g = taken_g + %s, taken_units = taken_units + %s "  # noqa: S608
            f"WHERE id = %s AND taken_g + %s <= capacity_g{units_fit} "
            "RETURNING capacity_g, taken_g, capacity_units, taken_units",
            [mass_g, units, slot_class_id, mass_g, *([units] if per_unit else [])],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    catalogue_changed()
    return int(row[0]), int(row[1]), None if row[2] is None else int(row[2]), int(row[3])
