"""The audit log: booking events and admin changes merged, newest first, filtered, paged and
exported, at a fixed number of queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Organisation, User
from bookings.models import Booking, BookingEvent
from marketplace.models import Mission
from tests.admin.helpers import admin_client_with_mfa, bulk_bookings, read_streamed_csv
from tests.factories import OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

AUDIT = "/admin/audit-log/"
DAY = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def event(
    booking: Booking, at: datetime, *, type: str = "booking.confirmed", actor: str = ""
) -> BookingEvent:
    return BookingEvent.objects.create(
        booking=booking,
        organisation_id=booking.organisation_id,
        type=type,
        from_status="held",
        to_status="confirmed",
        actor=actor or "staff:sales@moonslot.example",
        reason="PO 17",
        created_at=at,
    )


def admin_change(user: User, obj: Any, at: datetime, *, flag: int = CHANGE) -> LogEntry:
    entry = LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(type(obj)),
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        action_flag=flag,
        change_message='[{"changed": {"fields": ["Status"]}}]',
    )
    LogEntry.objects.filter(pk=entry.pk).update(action_time=at)
    return entry


@pytest.fixture
def customer() -> Organisation:
    return OrganisationFactory.create()


@pytest.fixture
def two_bookings(customer: Organisation) -> list[Booking]:
    return bulk_bookings(SlotClassFactory.create(capacity_g=1_000_000), customer, 2)


def rows(response: Any) -> list[tuple[str, str, str]]:
    assert response.status_code == 200
    return [(row["source"], row["kind"], row["ref"]) for row in response.context["rows"]]


def test_events_and_admin_changes_are_merged_newest_first(
    manager: User, sales: User, two_bookings: list[Booking]
) -> None:
    first, second = two_bookings
    mission = Mission.objects.get()
    event(first, DAY)
    admin_change(sales, first, DAY + timedelta(minutes=1))
    event(second, DAY + timedelta(minutes=2), type="booking.cancelled")
    admin_change(manager, mission, DAY + timedelta(minutes=3), flag=ADDITION)

    response = admin_client_with_mfa(manager).get(AUDIT)

    assert rows(response) == [
        ("admin", "admin.addition", ""),
        ("booking", "booking.cancelled", second.reference),
        ("admin", "admin.change", first.reference),
        ("booking", "booking.confirmed", first.reference),
    ]
    newest = response.context["rows"][0]
    assert newest["who"] == "manager@moonslot.example"
    assert newest["obj"] == f"marketplace.mission: {mission}"
    assert response.context["rows"][2]["detail"] == "Changed Status."
    assert response.context["rows"][3]["detail"] == "PO 17"


def test_filters_by_date_actor_reference_and_type(
    manager: User, sales: User, two_bookings: list[Booking]
) -> None:
    first, second = two_bookings
    event(first, DAY - timedelta(days=1))
    event(first, DAY, actor="api:abc123")
    event(second, DAY + timedelta(days=1), type="booking.cancelled")
    admin_change(sales, first, DAY + timedelta(minutes=1))
    admin_change(manager, second, DAY + timedelta(days=2))
    client = admin_client_with_mfa(manager)

    def kinds(**query: str) -> list[tuple[str, str, str]]:
        return rows(client.get(AUDIT, query))

    assert kinds(date_from="2026-03-10", date_to="2026-03-10") == [
        ("admin", "admin.change", first.reference),
        ("booking", "booking.confirmed", first.reference),
    ]
    assert kinds(actor="api:") == [("booking", "booking.confirmed", first.reference)]
    assert kinds(actor="manager@") == [("admin", "admin.change", second.reference)]
    assert {r[2] for r in kinds(reference=second.reference.lower())} == {second.reference}
    assert len(kinds(reference=second.reference)) == 2
    assert kinds(type="booking.cancelled") == [("booking", "booking.cancelled", second.reference)]
    assert kinds(type="admin.change", date_from="2026-03-11") == [
        ("admin", "admin.change", second.reference)
    ]


def test_bad_filter_input_is_a_form_error_not_a_500(manager: User) -> None:
    client = admin_client_with_mfa(manager)

    for query in (
        {"date_from": "yesterday"},
        {"reference": "AB\x00CD"},
        {"date_from": "2026-03-10", "date_to": "2026-03-01"},
        {"page": "999"},
        {"page": "x"},
        {"type": "x" * 500},
    ):
        response = client.get(AUDIT, query)
        assert response.status_code == 200, query


def test_roles_without_the_log_permission_see_booking_events_only(
    operations: User, sales: User, two_bookings: list[Booking]
) -> None:
    first, _ = two_bookings
    event(first, DAY)
    admin_change(sales, first, DAY)

    assert rows(admin_client_with_mfa(operations).get(AUDIT)) == [
        ("booking", "booking.confirmed", first.reference)
    ]


def test_the_csv_export_has_every_filtered_entry(
    manager: User, sales: User, two_bookings: list[Booking]
) -> None:
    first, second = two_bookings
    for minute in range(60):
        event(first, DAY + timedelta(minutes=minute))
    event(second, DAY, type="booking.cancelled")
    admin_change(sales, first, DAY + timedelta(hours=2))

    response = admin_client_with_mfa(manager).get(
        AUDIT, {"reference": first.reference, "export": "csv"}
    )

    assert response.status_code == 200
    lines = read_streamed_csv(response)
    assert len(lines) == 61
    assert lines[0]["source"] == "admin"
    assert lines[0]["detail"] == "Changed Status."
    assert {line["booking"] for line in lines} == {first.reference}
    assert lines[1]["at"] == (DAY + timedelta(minutes=59)).isoformat()


def test_the_log_is_paged_at_a_fixed_number_of_queries(
    manager: User, sales: User, two_bookings: list[Booking], django_assert_num_queries: Any
) -> None:
    first, second = two_bookings
    client = admin_client_with_mfa(manager)

    def seed(count: int) -> None:
        for index in range(count):
            event(first if index % 2 else second, DAY + timedelta(seconds=index))
            admin_change(sales, first, DAY + timedelta(seconds=index, milliseconds=500))

    def count_queries(query: dict[str, str]) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(AUDIT, query).status_code == 200
        return len(captured)

    seed(5)
    small = [count_queries({}), count_queries({"actor": "sales"})]
    seed(100)
    large = [count_queries({}), count_queries({"actor": "sales"})]
    last = client.get(AUDIT, {"page": "5"})

    assert small == large
    assert len(last.context["rows"]) == 210 - 4 * 50
    assert last.context["page"].paginator.count == 210
    # Session, user, permissions (2), the count, the page.
    with django_assert_num_queries(6):
        client.get(AUDIT, {"page": "2"})
