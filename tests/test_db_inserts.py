"""``config.db``'s inserts: one statement built once per model must store what ``save()``
stores (defaults, ``auto_now``, JSON) and leave the instance as ``save()`` leaves it."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone

from bookings.models import Booking, OutboxMessage, PayloadDeclaration
from bookings.services import Actor
from config.db import insert_row, insert_unless_conflict
from tests.bookings.api_helpers import service_hold
from tests.factories import OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db


def stored(instance: Any) -> dict[str, Any]:
    row = type(instance).objects.get(pk=instance.pk)
    return {field.attname: getattr(row, field.attname) for field in row._meta.concrete_fields}


def in_memory(instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def a_booking() -> Booking:
    return service_hold(SlotClassFactory.create(), OrganisationFactory.create())


def test_insert_row_stores_what_save_would_and_marks_the_instance_saved(
    django_assert_num_queries: Any,
) -> None:
    booking = a_booking()
    PayloadDeclaration.objects.filter(booking=booking).delete()
    declaration = PayloadDeclaration(booking=booking, name="Rover", hazards=[{"type": "x"}])
    before = timezone.now()

    with django_assert_num_queries(1):
        insert_row(declaration)

    assert declaration.pk is not None
    assert declaration._state.adding is False
    assert declaration.updated_at >= before  # auto_now, as save() sets it
    assert stored(declaration) == in_memory(declaration)
    assert stored(declaration)["hazards"] == [{"type": "x"}]
    assert stored(declaration)["review_status"] == declaration.review_status  # the default


def test_an_event_written_twice_is_two_rows_in_order() -> None:
    from bookings.events import event_write

    booking = a_booking()
    first = event_write(booking, type="note", actor=Actor.system("test"), data={"n": 1})
    second = event_write(booking, type="note", actor=Actor.system("test"), data={"n": 2})

    assert first.pk < second.pk
    assert stored(first)["data"] == {"n": 1}
    assert stored(second)["organisation_id"] == booking.organisation_id


def test_insert_unless_conflict_leaves_the_existing_row_and_the_instance_unsaved() -> None:
    first = OutboxMessage(topic="one", payload={"a": 1}, dedupe_key="same")
    assert insert_unless_conflict(first, conflict="dedupe_key") is True

    second = OutboxMessage(topic="two", payload={"a": 2}, dedupe_key="same")
    assert insert_unless_conflict(second, conflict="dedupe_key") is False

    assert second.pk is None
    assert second._state.adding is True
    assert list(
        OutboxMessage.objects.filter(dedupe_key="same").values_list("topic", flat=True)
    ) == ["one"]
    assert stored(first)["payload"] == {"a": 1}


def test_a_conflict_target_that_is_not_a_column_is_refused() -> None:
    with pytest.raises(FieldDoesNotExist):
        insert_unless_conflict(OutboxMessage(topic="x"), conflict="payloads")
    with pytest.raises(TypeError, match="not columns"):  # a reverse relation has no column
        insert_unless_conflict(Booking(), conflict="payload")
    assert not OutboxMessage.objects.exists()
