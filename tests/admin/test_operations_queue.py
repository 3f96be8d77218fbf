"""The operations queue through the admin's pages: operations see payloads awaiting review
(oldest first, by queue and mission) and accept or reject them; sales get 403. Sales clear
or deny bookings held by denied-party screening and keep the denied-party list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import DeniedParty, Organisation, User
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    PayloadDeclaration,
    ReviewStatus,
    ScreeningStatus,
)
from bookings.services import Actor, booking_confirm, booking_hold
from bookings.validation import PayloadInput
from marketplace.models import SlotClass
from tests.admin.helpers import admin_client_with_mfa
from tests.factories import MissionFactory, OrganisationFactory, SlotClassFactory

pytestmark = pytest.mark.django_db

QUEUE = "/admin/bookings/payloaddeclaration/"
BOOKINGS = "/admin/bookings/booking/"
DENIED = "/admin/accounts/deniedparty/"
ITAR = {"name": "Camera", "mass_g": 900, "dimensions_mm": [100, 100, 100]}


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(mission=MissionFactory.create(code="M3"))


@pytest.fixture
def ops_client(operations: User) -> Client:
    return admin_client_with_mfa(operations)


@pytest.fixture
def sales_client(sales: User) -> Client:
    return admin_client_with_mfa(sales)


def hold(
    slot_class: SlotClass,
    export: str = "ITAR",
    *,
    confirm: bool = True,
    organisation: Organisation | None = None,
    **extra: Any,
) -> Booking:
    booking = booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=organisation or OrganisationFactory.create(),
        channel="admin",
        actor=Actor.system("test"),
        mass_g=1000,
        payload=PayloadInput.from_mapping({**ITAR, "export_classification": export, **extra}),
    )
    if confirm:
        booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    return booking


def action(client: Client, name: str, ids: list[int], url: str = QUEUE, **extra: str) -> Any:
    return client.post(
        url, {"action": name, "index": "0", "_selected_action": [str(i) for i in ids], **extra}
    )


def queued(client: Client, **params: str) -> list[int]:
    """The booking ids the queue lists, in its order."""
    response = client.get(QUEUE, params)
    assert response.status_code == 200
    return [row.booking_id for row in response.context["cl"].result_list]


def declaration(booking: Booking) -> PayloadDeclaration:
    return PayloadDeclaration.objects.get(booking=booking)


def test_an_itar_payload_shows_in_the_queue_and_is_accepted_by_operations(
    deck: SlotClass, ops_client: Client
) -> None:
    booking = hold(deck)
    assert declaration(booking).review_status == ReviewStatus.EXPORT_REVIEW

    listing = ops_client.get(QUEUE)

    assert listing.status_code == 200
    assert booking.reference in listing.content.decode()
    assert "Export review" in listing.content.decode()

    response = action(ops_client, "accept_selected", [declaration(booking).pk])

    assert response.status_code == 302
    assert declaration(booking).review_status == ReviewStatus.ACCEPTED
    assert any(booking.reference in m for m in messages_of(response))
    event = BookingEvent.objects.filter(type=EventType.PAYLOAD_REVIEW_CHANGED).latest("pk")
    assert event.actor == "staff:ops@moonslot.example"
    assert booking.pk not in queued(ops_client)


def test_sales_cannot_see_or_act_on_the_queue(deck: SlotClass, sales_client: Client) -> None:
    booking = hold(deck)

    assert sales_client.get(QUEUE).status_code == 403
    assert action(sales_client, "accept_selected", [declaration(booking).pk]).status_code == 403
    assert declaration(booking).review_status == ReviewStatus.EXPORT_REVIEW


def test_the_queue_is_oldest_first_and_filters_by_queue_and_mission(
    deck: SlotClass, ops_client: Client
) -> None:
    first = hold(deck)
    second = hold(deck, "EAR99", hazards=[{"type": "propellant", "mass_g": 10}])
    waiting = hold(deck, "EAR99")  # data complete, confirmed: awaits an accept
    unconfirmed = hold(deck, "EAR99", confirm=False)  # not in the queue yet
    other = hold(SlotClassFactory.create(mission=MissionFactory.create(code="M4")))
    # In the queue since its creation, three days ago: it comes first.
    Booking.objects.filter(pk=waiting.pk).update(created_at=waiting.created_at - timedelta(days=3))

    assert queued(ops_client) == [waiting.pk, first.pk, second.pk, other.pk]
    assert unconfirmed.pk not in queued(ops_client)
    assert queued(ops_client, queue="safety_review") == [second.pk]
    assert queued(ops_client, queue="data_complete") == [waiting.pk]
    assert queued(ops_client, mission="M4") == [other.pk]


def test_the_queue_costs_the_same_for_five_payloads_or_twenty(
    deck: SlotClass, ops_client: Client, django_assert_max_num_queries: Any
) -> None:
    for _ in range(5):
        hold(deck)
    ops_client.get(QUEUE)
    with django_assert_max_num_queries(12) as five:
        assert ops_client.get(QUEUE).status_code == 200
    for _ in range(15):
        hold(deck)
    with django_assert_max_num_queries(len(five.captured_queries)):
        assert ops_client.get(QUEUE).status_code == 200


def test_rejecting_asks_for_a_reason_then_offloads_the_booking(
    deck: SlotClass, ops_client: Client
) -> None:
    booking = hold(deck)
    ids = [declaration(booking).pk]

    page = action(ops_client, "reject_selected", ids)
    missing_reason = action(ops_client, "reject_selected", ids, post="yes")
    done = action(ops_client, "reject_selected", ids, post="yes", note="Licence refused.")

    assert page.status_code == 200
    assert "refund under the policy" in page.content.decode()
    assert missing_reason.status_code == 200
    assert "Say why" in missing_reason.content.decode()
    assert done.status_code == 302
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED
    assert booking.refund_amount == booking.price_amount * 90 // 100
    assert declaration(booking).review_status == ReviewStatus.REJECTED


# --- screening decisions and the denied-party list ---------------------------------------


def flagged(deck: SlotClass) -> Booking:
    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    organisation = OrganisationFactory.create(name="Embargoed Aerospace Ltd")
    booking = hold(deck, "EAR99", confirm=False, organisation=organisation)
    with pytest.raises(Exception, match="compliance review"):
        booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    return booking


def test_sales_clear_a_screening_match_and_the_booking_is_confirmed(
    deck: SlotClass, sales_client: Client
) -> None:
    booking = flagged(deck)
    assert (
        booking.reference
        in sales_client.get(BOOKINGS, {"screening_status": "match"}).content.decode()
    )

    page = action(sales_client, "clear_screening", [booking.pk], url=BOOKINGS)
    done = action(
        sales_client, "clear_screening", [booking.pk], url=BOOKINGS, post="yes", note="Other firm."
    )

    assert "Embargoed Aerospace" in page.content.decode()  # the note names the entry
    assert done.status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.screening_status) == ("confirmed", ScreeningStatus.CLEARED)


def test_sales_deny_a_screening_match_and_the_booking_is_cancelled(
    deck: SlotClass, sales_client: Client
) -> None:
    booking = flagged(deck)

    action(sales_client, "deny_screening", [booking.pk], url=BOOKINGS, post="yes", note="Listed.")

    booking.refresh_from_db()
    assert (booking.status, booking.screening_status) == ("cancelled", ScreeningStatus.DENIED)


def test_operations_cannot_take_screening_decisions(deck: SlotClass, ops_client: Client) -> None:
    booking = flagged(deck)
    action(ops_client, "clear_screening", [booking.pk], url=BOOKINGS, post="yes", note="x")
    booking.refresh_from_db()
    assert booking.screening_status == ScreeningStatus.MATCH


def test_sales_keep_the_denied_party_list_with_checked_countries(sales_client: Client) -> None:
    refused = sales_client.post(
        f"{DENIED}add/", {"name": "Acme Orbital", "country": "Japan", "active": "on"}
    )
    added = sales_client.post(
        f"{DENIED}add/", {"name": "Acme Orbital", "country": "jp", "active": "on"}
    )

    assert "two-letter ISO code" in refused.content.decode()
    assert added.status_code == 302
    entry = DeniedParty.objects.get()
    assert entry.country == "JP"
    assert "acme orbital" in sales_client.get(DENIED).content.decode()


# --- the declaration, completed by staff -------------------------------------------------


def declare_url(booking: Booking) -> str:
    return f"{QUEUE}{booking.pk}/declare/"


def declare_data(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Camera",
        "mass": "900",
        "dimensions_0": "100",
        "dimensions_1": "100",
        "dimensions_2": "100",
        "power_w": "5",
        "export_classification": "EAR99",
    }
    data.update(overrides)
    return data


def test_sales_complete_a_declaration_in_the_admin_within_the_limits(
    deck: SlotClass, sales_client: Client
) -> None:
    booking = hold(deck, "EAR99", confirm=False)
    change_page = sales_client.get(f"{BOOKINGS}{booking.pk}/change/").content.decode()
    assert declare_url(booking) in change_page

    refused = sales_client.post(declare_url(booking), declare_data(power_w="45"))
    saved = sales_client.post(declare_url(booking), declare_data(power_w="7"))

    assert refused.status_code == 200
    assert "45 W exceeds the class&#x27;s maximum power of 20 W." in refused.content.decode()
    assert saved.status_code == 302
    assert declaration(booking).power_w == 7


def test_after_the_cutoff_the_admin_declaration_is_closed(
    deck: SlotClass, ops_client: Client
) -> None:
    booking = hold(deck)
    deck.mission.booking_cutoff = deck.mission.launch_window_start - timedelta(days=500)
    deck.mission.save(update_fields=["booking_cutoff"])

    shown = ops_client.get(declare_url(booking))

    assert "The booking cutoff has passed" in shown.content.decode()
    assert ops_client.post(declare_url(booking), declare_data()).status_code == 403
    assert declaration(booking).export_classification == "ITAR"


def test_finance_cannot_open_the_declaration(deck: SlotClass, finance: User) -> None:
    booking = hold(deck)
    assert admin_client_with_mfa(finance).get(declare_url(booking)).status_code == 403
