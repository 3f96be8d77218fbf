"""The booking admin, driven through its pages as each role: holds placed through the add
form, transitions through actions and buttons (services only), 403 for what a role lacks,
and a change list whose cost does not grow with the number of bookings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organisation, User
from bookings.admin_services import refund_needs_manager
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    OutboxMessage,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.services import Actor, booking_confirm, booking_hold
from marketplace.models import Channel, Mission, MissionStatus, SlotClass
from marketplace.money import Money
from tests.admin.helpers import admin_client_with_mfa, bulk_bookings, read_streamed_csv
from tests.factories import (
    MissionFactory,
    OrganisationFactory,
    ResellerFactory,
    SlotClassFactory,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/bookings/booking/"
ADD = "/admin/bookings/booking/add/"


def change_url(booking: Booking, suffix: str = "change/") -> str:
    return f"/admin/bookings/booking/{booking.pk}/{suffix}"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def post_action(client: Client, action: str, bookings: list[Booking], **extra: str) -> Any:
    data: dict[str, Any] = {
        "action": action,
        "index": "0",
        "_selected_action": [str(b.pk) for b in bookings],
        **extra,
    }
    return client.post(CHANGELIST, data)


@pytest.fixture
def deck() -> SlotClass:
    return SlotClassFactory.create(capacity_g=100_000, min_mass_g=500, max_mass_g=50_000)


@pytest.fixture
def customer() -> Organisation:
    return OrganisationFactory.create(name="Selene Robotics")


@pytest.fixture
def sales_client(sales: User) -> Client:
    return admin_client_with_mfa(sales)


def hold_data(customer: Organisation, offered: SlotClass, **overrides: Any) -> dict[str, Any]:
    data = {
        "organisation": str(customer.pk),
        "slot_class": str(offered.pk),
        "mass_g": "2500",
        "quantity": "",
        "currency": "JPY",
        "hold_days": "14",
        "customer_name": "Aiko Tanaka",
        "customer_email": "aiko@selene.example",
        "payload_name": "Regolith sampler",
        "payload_description": "",
        "payload_mass_g": "2400",
        "payload_length_mm": "300",
        "payload_width_mm": "200",
        "payload_height_mm": "100",
        "payload_power_w": "",
        "payload_export_classification": "EAR99",
    }
    data.update(overrides)
    return data


# --- placing holds ----------------------------------------------------------------------
def test_sales_place_a_hold_for_a_customer_through_the_add_form(
    sales: User, sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    before = timezone.now()

    response = sales_client.post(ADD, hold_data(customer, deck))

    booking = Booking.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(booking)
    assert (booking.status, booking.channel, booking.organisation) == ("held", "admin", customer)
    assert booking.created_by == sales
    assert booking.mass_g == 2500
    assert booking.price_amount == 180_000_000 * 2500 // 1000
    assert booking.hold_expires_at is not None
    assert before + timedelta(days=14) <= booking.hold_expires_at
    assert booking.hold_expires_at <= timezone.now() + timedelta(days=14)
    assert (booking.customer_name, booking.customer_email) == ("Aiko Tanaka", "aiko@selene.example")
    assert booking.payload.name == "Regolith sampler"
    assert booking.payload.dimensions_mm == [300, 200, 100]
    deck.refresh_from_db()
    assert deck.taken_g == 2500
    event = BookingEvent.objects.get(booking=booking)
    assert (event.type, event.actor_user, event.actor) == (
        "booking.held",
        sales,
        "staff:sales@moonslot.example",
    )
    entry = LogEntry.objects.get(object_id=str(booking.pk))
    assert (entry.user, entry.action_flag) == (sales, ADDITION)


def test_a_hold_without_days_lasts_the_classs_sales_hold_time(
    sales_client: Client, customer: Organisation
) -> None:
    deck = SlotClassFactory.create(hold_minutes_admin=3 * 24 * 60)
    before = timezone.now()

    sales_client.post(ADD, hold_data(customer, deck, hold_days=""))

    booking = Booking.objects.get()
    assert booking.hold_expires_at is not None
    assert before + timedelta(days=3) <= booking.hold_expires_at
    assert booking.hold_expires_at <= timezone.now() + timedelta(days=3)


def test_the_add_form_offers_only_classes_on_sale_to_sales(
    sales_client: Client, deck: SlotClass
) -> None:
    web_only = SlotClassFactory.create(sold_on_admin=False, name="Web only")
    planned = SlotClassFactory.create(
        mission=MissionFactory.create(status=MissionStatus.PLANNED), name="Planned"
    )

    choices = sales_client.get(ADD).context["adminform"].form.fields["slot_class"].queryset

    assert list(choices) == [deck]
    assert web_only not in choices
    assert planned not in choices


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"mass_g": "100"}, "mass_g", "The minimum is"),
        ({"mass_g": "2550"}, "mass_g", "Book in steps of"),
        ({"mass_g": "99999999999"}, "mass_g", "less than or equal"),
        ({"mass_g": "-5"}, "mass_g", "greater than or equal"),
        ({"mass_g": "lots"}, "mass_g", "whole number"),
        ({"payload_length_mm": "900"}, "payload_length_mm", "exceeds the class's maximum"),
        ({"payload_width_mm": ""}, "payload_length_mm", "all three dimensions"),
        ({"payload_mass_g": "9000"}, "payload_mass_g", "weighs more than"),
        ({"organisation": "999999"}, "organisation", "valid choice"),
        ({"slot_class": "abc"}, "slot_class", "valid choice"),
        ({"currency": "EUR"}, "currency", "valid choice"),
        ({"hold_days": "400"}, "hold_days", "less than or equal"),
    ],
)
def test_invalid_holds_are_field_errors_not_500s(
    sales_client: Client,
    deck: SlotClass,
    customer: Organisation,
    overrides: dict[str, str],
    field: str,
    text: str,
) -> None:
    response = sales_client.post(ADD, hold_data(customer, deck, **overrides))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert text in " ".join(errors.get(field, [])), errors
    assert not Booking.objects.exists()
    deck.refresh_from_db()
    assert deck.taken_g == 0


def test_domain_refusals_are_shown_on_the_form(
    sales_client: Client, customer: Organisation
) -> None:
    full = SlotClassFactory.create(capacity_g=10_000, max_mass_g=10_000)
    SlotClass.objects.filter(pk=full.pk).update(taken_g=9_000)
    jpy_only = SlotClassFactory.create(prices={"JPY": 1_000_000})
    closing = SlotClassFactory.create()
    capsule = SlotClassFactory.per_unit(capacity_units=100, max_quantity=10)

    no_room = sales_client.post(ADD, hold_data(customer, full))
    no_usd = sales_client.post(ADD, hold_data(customer, jpy_only, currency="USD"))
    # Still on sale by status, but its booking cutoff has passed since the page loaded.
    Mission.objects.filter(pk=closing.mission_id).update(
        booking_cutoff=timezone.now() - timedelta(minutes=1)
    )
    closed = sales_client.post(ADD, hold_data(customer, closing))
    no_dims = {f"payload_{side}_mm": "" for side in ("length", "width", "height")}
    by_mass = sales_client.post(
        ADD, hold_data(customer, capsule, mass_g="20", payload_mass_g="", **no_dims)
    )

    def non_field(response: Any) -> str:
        assert response.status_code == 200
        return " ".join(response.context["adminform"].form.non_field_errors())

    assert "Not enough room left in this class: 1000 g available." in non_field(no_room)
    assert "USD is not offered" in non_field(no_usd)
    assert "is not on sale" in non_field(closed)
    assert "give a quantity" in " ".join(by_mass.context["adminform"].form.errors["quantity"])
    assert not Booking.objects.exists()


# --- the change form never changes a booking ---------------------------------------------
def test_posting_status_confirmed_to_the_change_form_changes_nothing(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1, price_amount=5_000)

    page = sales_client.get(change_url(booking))
    response = sales_client.post(
        change_url(booking),
        {"status": "confirmed", "price_amount": "1", "refund_amount": "5000", "mass_g": "1"},
    )

    assert page.status_code == 200
    assert 'name="status"' not in page.content.decode()
    assert response.status_code == 403
    booking.refresh_from_db()
    assert (booking.status, booking.price_amount, booking.refund_amount, booking.mass_g) == (
        "held",
        5_000,
        None,
        deck.min_mass_g,
    )
    assert not BookingEvent.objects.exists()


def test_a_superuser_cannot_edit_or_delete_a_booking_either(
    deck: SlotClass, customer: Organisation
) -> None:
    from tests.admin.helpers import staff_user

    (booking,) = bulk_bookings(deck, customer, 1)
    client = admin_client_with_mfa(staff_user(superuser=True))

    edit = client.post(change_url(booking), {"status": "confirmed"})
    delete = client.post(change_url(booking, "delete/"), {"post": "yes"})

    assert (edit.status_code, delete.status_code) == (403, 403)
    booking.refresh_from_db()
    assert booking.status == "held"


# --- confirming -------------------------------------------------------------------------
def test_confirm_selected_on_account_confirms_live_holds_and_reports_the_rest(
    sales: User, sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    live = bulk_bookings(deck, customer, 3)
    lapsed = bulk_bookings(deck, customer, 1, hold_expires_at=timezone.now() - timedelta(hours=1))

    response = post_action(sales_client, "confirm_on_account", live + lapsed)

    assert response.status_code == 302
    for booking in live:
        booking.refresh_from_db()
        assert (booking.status, booking.on_account) == ("confirmed", True)
    assert Booking.objects.get(pk=lapsed[0].pk).status_at() == "expired"
    events = BookingEvent.objects.filter(type="booking.confirmed")
    assert events.count() == 3
    assert {e.actor_user for e in events} == {sales}
    assert LogEntry.objects.filter(user=sales, action_flag=CHANGE).count() == 3
    texts = messages_of(response)
    assert "Confirmed 3 bookings." in texts
    assert any(lapsed[0].reference in text and "lapsed" in text for text in texts)


def test_the_confirm_button_confirms_one_booking_with_a_reason(
    sales: User, sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1)

    page = sales_client.get(change_url(booking))
    form = sales_client.get(change_url(booking, "confirm/"))
    response = sales_client.post(
        change_url(booking, "confirm/"), {"reason": "Bank transfer received"}
    )

    assert change_url(booking, "confirm/") in page.content.decode()
    assert form.status_code == 200
    assert response.status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.on_account) == ("confirmed", False)
    event = BookingEvent.objects.get(booking=booking, type="booking.confirmed")
    assert (event.reason, event.actor_user) == ("Bank transfer received", sales)


def test_confirming_a_lapsed_hold_is_a_message_not_an_error_page(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(
        deck, customer, 1, hold_expires_at=timezone.now() - timedelta(minutes=1)
    )

    response = sales_client.post(change_url(booking, "confirm/"), {"on_account": "on"})

    assert response.status_code == 302
    assert "The hold has lapsed; place a new one." in messages_of(response)
    assert Booking.objects.get(pk=booking.pk).status_at() == "expired"


def test_operations_are_not_offered_confirm_and_get_403_when_forcing_it(
    operations: User, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1)
    client = admin_client_with_mfa(operations)

    listing = client.get(CHANGELIST).content.decode()
    change = client.get(change_url(booking)).content.decode()
    forced = post_action(client, "confirm_on_account", [booking])
    button = client.post(change_url(booking, "confirm/"), {"on_account": "on"})

    assert 'value="confirm_on_account"' not in listing
    assert 'value="cancel_with_refund"' not in listing
    assert 'value="export_csv"' in listing
    assert change_url(booking, "confirm/") not in change
    assert (forced.status_code, button.status_code) == (403, 403)
    booking.refresh_from_db()
    assert booking.status == "held"


# --- cancelling -------------------------------------------------------------------------
def test_bulk_cancel_of_100_frees_exactly_their_capacity_and_writes_100_events(
    sales: User, sales_client: Client, customer: Organisation
) -> None:
    deck = SlotClassFactory.create(capacity_g=1_000_000, min_mass_g=1_000, max_mass_g=50_000)
    chosen = bulk_bookings(
        deck, customer, 100, status=BookingStatus.CONFIRMED, mass_g=2_000, price_amount=1_000_000
    )
    others = bulk_bookings(deck, customer, 7, mass_g=3_000)
    deck.refresh_from_db()
    taken_before = deck.taken_g
    assert taken_before == 100 * 2_000 + 7 * 3_000

    page = post_action(sales_client, "cancel_with_refund", chosen)
    done = post_action(
        sales_client, "cancel_with_refund", chosen, post="yes", reason="Customer withdrew"
    )

    # The confirmation page lists each booking with its refund (90% a year or more ahead).
    assert page.status_code == 200
    assert len(page.context["rows"]) == 100
    assert {row.refund.amount for row in page.context["rows"]} == {900_000}
    assert "¥900,000" in page.content.decode()
    assert done.status_code == 302
    deck.refresh_from_db()
    assert taken_before - deck.taken_g == 100 * 2_000
    assert deck.taken_g == 7 * 3_000
    cancelled = Booking.objects.filter(pk__in=[b.pk for b in chosen])
    assert set(cancelled.values_list("status", flat=True)) == {"cancelled"}
    assert set(cancelled.values_list("refund_amount", flat=True)) == {900_000}
    events = BookingEvent.objects.filter(type="booking.cancelled")
    assert events.count() == 100
    assert set(events.values_list("booking_id", flat=True)) == {b.pk for b in chosen}
    assert set(events.values_list("actor_user", "reason")) == {(sales.pk, "Customer withdrew")}
    assert set(
        Booking.objects.filter(pk__in=[b.pk for b in others]).values_list("status", flat=True)
    ) == {"held"}
    assert LogEntry.objects.filter(user=sales, action_flag=CHANGE).count() == 100


def test_bulk_cancel_needs_a_reason(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    chosen = bulk_bookings(deck, customer, 2)

    response = post_action(sales_client, "cancel_with_refund", chosen, post="yes", reason="")

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert set(Booking.objects.values_list("status", flat=True)) == {"held"}


def test_a_refund_above_the_threshold_needs_a_sales_manager(
    sales_client: Client, manager: User, deck: SlotClass, customer: Organisation
) -> None:
    big, small = (
        bulk_bookings(deck, customer, 1, status="confirmed", price_amount=price)[0]
        for price in (10_000_000, 1_000_000)
    )

    page = sales_client.get(change_url(big, "cancel/"))
    refused = sales_client.post(change_url(big, "cancel/"), {"reason": "asked"})
    bulk = post_action(sales_client, "cancel_with_refund", [big, small], post="yes", reason="x")

    assert "Needs a sales manager" in page.content.decode()
    assert refused.status_code == 403
    assert Booking.objects.get(pk=big.pk).status == "confirmed"
    assert Booking.objects.get(pk=small.pk).status == "cancelled"
    assert any(big.reference in text and "sales manager" in text for text in messages_of(bulk))

    by_manager = admin_client_with_mfa(manager).post(
        change_url(big, "cancel/"), {"reason": "approved"}
    )

    assert by_manager.status_code == 302
    big.refresh_from_db()
    assert (big.status, big.refund_amount) == ("cancelled", 9_000_000)


def test_finance_cannot_cancel_but_can_export(
    finance: User, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1, status="confirmed")
    client = admin_client_with_mfa(finance)

    listing = client.get(CHANGELIST).content.decode()
    forced = post_action(client, "cancel_with_refund", [booking], post="yes", reason="x")
    button = client.get(change_url(booking, "cancel/"))
    export = post_action(client, "export_csv", [booking])

    assert 'value="cancel_with_refund"' not in listing
    assert (forced.status_code, button.status_code) == (403, 403)
    assert export.status_code == 200
    assert Booking.objects.get(pk=booking.pk).status == "confirmed"


def test_sales_cannot_change_prices_or_capacity_but_managers_can(
    sales_client: Client, manager: User, deck: SlotClass
) -> None:
    url = f"/admin/marketplace/slotclass/{deck.pk}/change/"

    view = sales_client.get(url)
    edit = sales_client.post(url, {"capacity_g": "1", "prices-0-amount": "1"})
    manager_page = admin_client_with_mfa(manager).get(url).content.decode()

    assert view.status_code == 200
    assert 'name="prices-0-amount"' not in view.content.decode()
    assert edit.status_code == 403
    deck.refresh_from_db()
    assert deck.capacity_g == 100_000
    assert 'name="prices-0-amount"' in manager_page
    assert 'name="capacity_g"' in manager_page


def test_unknown_or_garbage_ids_are_404(sales_client: Client) -> None:
    for suffix in ("confirm/", "cancel/"):
        assert sales_client.get(f"{CHANGELIST}999999/{suffix}").status_code == 404
        assert sales_client.get(f"{CHANGELIST}abc/{suffix}").status_code == 404


# --- notices and exports ----------------------------------------------------------------
def test_resend_confirmation_queues_the_confirmation_through_the_outbox(
    sales: User,
    sales_client: Client,
    deck: SlotClass,
    customer: Organisation,
    django_capture_on_commit_callbacks: Any,
    mailoutbox: list[Any],
) -> None:
    actor = Actor.for_user(sales)
    booking = booking_hold(
        slot_class_id=deck.pk,
        currency="JPY",
        organisation=customer,
        channel=Channel.ADMIN,
        actor=actor,
        mass_g=1_000,
    )
    booking_confirm(booking_id=booking.pk, actor=actor, on_account=True)
    lapsed = bulk_bookings(deck, customer, 1, hold_expires_at=timezone.now() - timedelta(days=1))
    confirmed_event = BookingEvent.objects.get(booking=booking, type="booking.confirmed")
    before = set(OutboxMessage.objects.values_list("pk", flat=True))
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(sales_client, "resend_notice", [booking, *lapsed])

    (message,) = OutboxMessage.objects.exclude(pk__in=before)
    assert message.topic == "booking.notify"
    assert message.payload["type"] == "booking.confirmed"
    assert message.payload["event_id"] == confirmed_event.pk
    assert message.payload["booking_id"] == booking.pk
    assert [m.to for m in mailoutbox] == [[customer.notification_email]]
    assert "is confirmed" in mailoutbox[0].subject
    texts = messages_of(response)
    assert "Queued 1 notice." in texts
    assert any(lapsed[0].reference in text for text in texts)


def test_export_csv_streams_the_selected_bookings_with_formulas_defused(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    chosen = bulk_bookings(deck, customer, 3, customer_name="=HYPERLINK(1)")
    bulk_bookings(deck, customer, 2)

    response = post_action(sales_client, "export_csv", chosen)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = read_streamed_csv(response)
    assert sorted(row["reference"] for row in rows) == sorted(b.reference for b in chosen)
    assert {row["customer_name"] for row in rows} == {"'=HYPERLINK(1)"}
    assert {row["status"] for row in rows} == {"held"}
    assert {row["price_minor_units"] for row in rows} == {"1000000"}


def test_export_csv_of_all_filtered_bookings(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    held = bulk_bookings(deck, customer, 4)
    bulk_bookings(deck, customer, 3, status="confirmed")

    response = sales_client.post(
        f"{CHANGELIST}?status=held",
        {
            "action": "export_csv",
            "index": "0",
            "select_across": "1",
            "_selected_action": [str(held[0].pk)],
        },
    )

    assert sorted(row["reference"] for row in read_streamed_csv(response)) == sorted(
        b.reference for b in held
    )


# --- the change list --------------------------------------------------------------------
def test_the_change_list_costs_the_same_number_of_queries_at_10_and_200_bookings(
    sales_client: Client, customer: Organisation, django_assert_num_queries: Any
) -> None:
    reseller = ResellerFactory.create()
    classes = [SlotClassFactory.create(capacity_g=10_000_000) for _ in range(3)]
    capsule = SlotClassFactory.per_unit(capacity_units=100_000)

    def seed(count: int) -> None:
        for slot_class in (*classes, capsule):
            per_class = count // 4
            mass = slot_class.min_mass_g
            bulk_bookings(slot_class, customer, per_class // 2, mass_g=mass)
            bulk_bookings(
                slot_class, reseller, per_class - per_class // 2, status="confirmed", mass_g=mass
            )

    def count_queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = sales_client.get(url)
        assert response.status_code == 200
        return len(captured)

    seed(12)
    urls = [
        CHANGELIST,
        f"{CHANGELIST}?status=held&q=Payload",
        f"{CHANGELIST}?reseller={reseller.pk}",
    ]
    small = [count_queries(url) for url in urls]
    seed(200)
    assert Booking.objects.count() == 212
    large = [count_queries(url) for url in urls]

    assert small == large
    # Session, user, the role's permissions (2), the mission, class and reseller filters
    # (3), the filtered and full counts (2), the page.
    with django_assert_num_queries(10):
        sales_client.get(CHANGELIST)


def test_the_status_filter_reads_live_status(
    sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    live = bulk_bookings(deck, customer, 2)
    lapsed = bulk_bookings(deck, customer, 1, hold_expires_at=timezone.now() - timedelta(minutes=5))
    swept = bulk_bookings(deck, customer, 1, status="expired")

    def refs(query: str) -> set[str]:
        response = sales_client.get(f"{CHANGELIST}?{query}")
        return {b.reference for b in response.context["cl"].result_list}

    assert refs("status=held") == {b.reference for b in live}
    assert refs("status=expired") == {b.reference for b in lapsed + swept}
    listing = sales_client.get(f"{CHANGELIST}?status=expired").content.decode()
    assert "Expired (not swept yet)" in listing


def test_search_finds_by_reference_customer_organisation_and_payload(
    sales_client: Client, deck: SlotClass
) -> None:
    selene = OrganisationFactory.create(name="Selene Robotics")
    other = OrganisationFactory.create(name="Tycho Ltd")
    (by_name,) = bulk_bookings(deck, other, 1, customer_name="Haruto Sato")
    (by_email,) = bulk_bookings(deck, other, 1, customer_email="ops@crater.example")
    (by_org,) = bulk_bookings(deck, selene, 1)
    (by_payload,) = bulk_bookings(deck, other, 1)
    PayloadDeclaration.objects.filter(booking=by_payload).update(name="Lunar seed vault")

    def refs(term: str) -> set[str]:
        response = sales_client.get(CHANGELIST, {"q": term})
        return {b.reference for b in response.context["cl"].result_list}

    assert refs(by_name.reference.lower()) == {by_name.reference}
    assert refs("haruto") == {by_name.reference}
    assert refs("crater.example") == {by_email.reference}
    assert refs("selene") == {by_org.reference}
    assert refs("seed vault") == {by_payload.reference}


def test_filters_by_mission_class_channel_and_reseller(
    sales_client: Client, customer: Organisation
) -> None:
    deck, side = SlotClassFactory.create(), SlotClassFactory.create()
    reseller, other_reseller = ResellerFactory.create(), ResellerFactory.create()
    (on_deck,) = bulk_bookings(deck, customer, 1)
    (on_side,) = bulk_bookings(side, customer, 1, channel=Channel.WEB)
    (resold,) = bulk_bookings(side, reseller, 1, channel=Channel.API)
    bulk_bookings(side, other_reseller, 1, channel=Channel.API)

    def refs(query: str) -> set[str]:
        response = sales_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200
        return {b.reference for b in response.context["cl"].result_list}

    assert refs(f"slot_class__mission__id__exact={deck.mission_id}") == {on_deck.reference}
    assert refs(f"slot_class={deck.pk}") == {on_deck.reference}
    assert refs("channel__exact=web") == {on_side.reference}
    assert refs(f"reseller={reseller.pk}") == {resold.reference}
    assert refs(f"reseller={customer.pk}") == set()
    assert refs("reseller=x&slot_class=%00") == set()


# --- the change page: history, payload review, placeholders -------------------------------
def test_the_change_page_shows_history_payload_and_placeholders(
    sales: User, sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    booking = booking_hold(
        slot_class_id=deck.pk,
        currency="USD",
        organisation=customer,
        channel=Channel.ADMIN,
        actor=Actor.for_user(sales),
        mass_g=1_500,
    )
    booking_confirm(booking_id=booking.pk, actor=Actor.for_user(sales), reason="PO 4711")

    page = sales_client.get(change_url(booking)).content.decode()

    assert "booking.held" in page
    assert "booking.confirmed" in page
    assert "PO 4711" in page
    assert "staff:sales@moonslot.example" in page
    assert "Payments and refunds" in page
    assert "Instalments" in page
    assert "Manifest lines" in page
    assert "$1,800,000.00" in page  # USD 1,200,000.00 per kg × 1.5 kg
    assert "payload-review" not in page  # sales do not review payloads


def test_operations_move_a_payload_review_through_the_service(
    operations: User, sales_client: Client, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1, review_status=ReviewStatus.DATA_COMPLETE)
    client = admin_client_with_mfa(operations)
    url = change_url(booking, "payload-review/")

    page = client.get(change_url(booking)).content.decode()
    moved = client.post(url, {"to_status": "safety_review", "reason": "Battery 80 Wh"})
    skipped = client.post(url, {"to_status": "flown"})
    by_sales = sales_client.post(url, {"to_status": "accepted"})

    assert url in page
    assert moved.status_code == 302
    assert skipped.status_code == 302
    assert any("cannot become flown" in text for text in messages_of(skipped))
    assert by_sales.status_code == 403
    booking.payload.refresh_from_db()
    assert booking.payload.review_status == "safety_review"
    event = BookingEvent.objects.get(booking=booking)
    assert (event.type, event.actor_user, event.reason) == (
        "payload.review_changed",
        operations,
        "Battery 80 Wh",
    )
    assert event.data == {"from": "data_complete", "to": "safety_review"}
    assert LogEntry.objects.filter(user=operations, object_id=str(booking.pk)).count() == 1


def test_a_cancelled_bookings_payload_is_not_reviewed(
    operations: User, deck: SlotClass, customer: Organisation
) -> None:
    (booking,) = bulk_bookings(deck, customer, 1, status="cancelled")
    client = admin_client_with_mfa(operations)

    page = client.get(change_url(booking)).content.decode()
    response = client.post(change_url(booking, "payload-review/"), {"to_status": "safety_review"})

    assert "payload-review" not in page
    assert any("no longer reviewed" in text for text in messages_of(response))
    assert not BookingEvent.objects.exists()


def test_sales_find_the_customer_organisation_by_name_in_the_hold_form(
    sales_client: Client, customer: Organisation, operations: User
) -> None:
    OrganisationFactory.create(name="Tycho Ltd")
    query = {
        "app_label": "bookings",
        "model_name": "booking",
        "field_name": "organisation",
        "term": "selene",
    }

    found = sales_client.get("/admin/autocomplete/", query)
    by_operations = admin_client_with_mfa(operations).get("/admin/autocomplete/", query)

    assert found.status_code == 200
    assert [r["text"] for r in found.json()["results"]] == ["Selene Robotics"]
    assert by_operations.status_code == 403


@pytest.mark.parametrize(
    ("refund", "needs"),
    [
        (Money(0, "EUR"), False),
        (Money(5_000_000, "JPY"), False),
        (Money(5_000_001, "JPY"), True),
        (Money(50_000_00, "USD"), False),
        (Money(1, "EUR"), True),  # a currency without a threshold always needs a manager
    ],
)
def test_the_refund_approval_threshold(refund: Money, needs: bool, settings: Any) -> None:
    settings.MOONSLOT_REFUND_APPROVAL_THRESHOLD = {"JPY": 5_000_000, "USD": 50_000_00}

    assert refund_needs_manager(refund) is needs
