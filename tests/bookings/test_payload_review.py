"""Payload declarations against the class and lander limits (API, site), the review's
routing (safety, export, back to review on a material change), the manifest's "cleared"
mark, offloading a rejected payload with its tier's refund, the payment plan's milestone,
the site's declaration page until the cutoff, and the declaration reminders."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MemberRole, User
from bookings.admin_services import PayloadNotReviewable, payload_review_change
from bookings.manifests import manifest_build
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    EventType,
    Instalment,
    OutboxMessage,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.outbox import outbox_process
from bookings.review import declarations_remind
from bookings.services import Actor, booking_confirm, booking_hold, booking_payload_update
from bookings.validation import PayloadInput, check_payload
from marketplace.models import Milestone, SlotClass
from tests.bookings.api_helpers import (
    BOOKINGS,
    PAYLOAD,
    hold_body,
    keyed_client,
    place_hold,
    url,
)
from tests.bookings.plan_helpers import deck_class
from tests.factories import (
    LanderPositionFactory,
    MembershipFactory,
    OrganisationFactory,
    SlotClassFactory,
    UserFactory,
)
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

OPS = Actor.system("test:operations")
COMPLETE = {"name": "Rover", "mass_g": 900, "dimensions_mm": [100, 100, 100]}


@pytest.fixture
def deck() -> SlotClass:
    """Per kg, 0.5–50 kg, at most 400 mm a side and 20 W; tiers 365 d: 90%, 180 d: 50%."""
    return SlotClassFactory.create()


def hold(slot_class: SlotClass, payload: dict[str, Any] | None = None, **kwargs: Any) -> Booking:
    kwargs.setdefault("actor", Actor.system("test"))
    return booking_hold(
        slot_class_id=slot_class.pk,
        currency="JPY",
        organisation=kwargs.pop("organisation", None) or OrganisationFactory.create(),
        channel=kwargs.pop("channel", "admin"),
        mass_g=1000,
        payload=PayloadInput.from_mapping(payload) if payload is not None else None,
        **kwargs,
    )


def review_of(booking: Booking) -> str:
    return PayloadDeclaration.objects.get(booking=booking).review_status


# --- limits ------------------------------------------------------------------------------


def test_api_refuses_power_over_the_class_limit_naming_the_limit(deck: SlotClass) -> None:
    client = keyed_client()
    body = hold_body(deck, payload={"power_w": 45})

    response = client.post(BOOKINGS, body, format="json")

    error = assert_matches_schema(response, BOOKINGS, "post", 400)
    assert error["code"] == "invalid"
    assert error["fields"]["payload.power_w"] == ["45 W exceeds the class's maximum power of 20 W."]


def test_api_patch_refuses_a_size_over_the_class_limit_and_changes_nothing(
    deck: SlotClass,
) -> None:
    client = keyed_client()
    booking = place_hold(client, deck, payload={"name": "Rover"})

    response = client.patch(
        url(PAYLOAD, booking["reference"]), {"dimensions_mm": [100, 450, 100]}, format="json"
    )

    error = assert_matches_schema(response, PAYLOAD, "patch", 400)
    assert error["fields"]["payload.dimensions_mm"] == [
        "The width of 450 mm exceeds the class's maximum of 400 mm (400 × 400 × 400 mm)."
    ]
    assert PayloadDeclaration.objects.get(booking__reference=booking["reference"]).width_mm is None


def test_a_tighter_lander_position_is_the_limit_named() -> None:
    position = LanderPositionFactory.create(
        name="Side mount", max_power_w=10, max_height_mm=300, max_data_kbps=64
    )
    slot_class = SlotClassFactory.create(mission__lander=position.lander, position=position)

    errors = check_payload(
        slot_class,
        PayloadInput(power_w=15, dimensions_mm=[100, 100, 350], data_kbps=128),
        booked_mass_g=1000,
    )

    assert errors == {
        "payload.power_w": [
            "15 W exceeds the maximum power of 10 W at the lander position Side mount."
        ],
        "payload.dimensions_mm": [
            "The height of 350 mm exceeds the maximum of 300 mm at the lander position Side mount."
        ],
        "payload.data_kbps": ["128 kbps exceeds the position's maximum data rate of 64 kbps."],
    }


@pytest.mark.parametrize(
    ("hazard", "path", "words"),
    [
        ({"type": "lithium_battery", "energy_wh": 0}, "energy_wh", "watt-hours"),
        ({"type": "pressure_vessel"}, "meop_kpa", "kPa"),
        ({"type": "propellant", "mass_g": True}, "mass_g", "grams"),
    ],
)
def test_hazard_figures_are_refused_with_their_unit(
    deck: SlotClass, hazard: dict[str, Any], path: str, words: str
) -> None:
    errors = check_payload(deck, PayloadInput(hazards=[hazard]), booked_mass_g=1000)

    [message] = errors[f"payload.hazards.0.{path}"]
    assert words in message


def test_payload_heavier_than_booked_names_the_booked_mass(deck: SlotClass) -> None:
    errors = check_payload(deck, PayloadInput(mass_g=1200), booked_mass_g=1000)
    assert errors == {"payload.mass_g": ["The payload weighs more than the 1 kg booked."]}


# --- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"export_classification": "EAR99"}, ReviewStatus.DATA_COMPLETE),
        ({"export_classification": "not_controlled"}, ReviewStatus.DATA_COMPLETE),
        ({"export_classification": "ITAR"}, ReviewStatus.EXPORT_REVIEW),
        ({"export_classification": "EAR_listed"}, ReviewStatus.EXPORT_REVIEW),
        ({"export_classification": "JP_FEFTA_listed"}, ReviewStatus.EXPORT_REVIEW),
        (
            {
                "export_classification": "EAR99",
                "hazards": [{"type": "lithium_battery", "energy_wh": 100}],
            },
            ReviewStatus.DATA_COMPLETE,
        ),
        (
            {
                "export_classification": "EAR99",
                "hazards": [{"type": "lithium_battery", "energy_wh": 101}],
            },
            ReviewStatus.SAFETY_REVIEW,
        ),
        (
            {"export_classification": "ITAR", "hazards": [{"type": "propellant", "mass_g": 5}]},
            ReviewStatus.SAFETY_REVIEW,
        ),
        (
            {"export_classification": "EAR99", "hazards": [{"type": "radioactive_source"}]},
            ReviewStatus.SAFETY_REVIEW,
        ),
        ({"hazards": [{"type": "pressure_vessel", "meop_kpa": 300}]}, ReviewStatus.DECLARED),
    ],
)
def test_a_complete_declaration_is_routed_by_its_hazards_and_export_class(
    deck: SlotClass, extra: dict[str, Any], expected: str
) -> None:
    booking = hold(deck, {**COMPLETE, **extra})
    assert review_of(booking) == expected


def test_accepting_clears_safety_then_export_then_accepts(deck: SlotClass) -> None:
    booking = hold(
        deck,
        {
            **COMPLETE,
            "export_classification": "ITAR",
            "hazards": [{"type": "pressure_vessel", "meop_kpa": 300}],
        },
    )
    assert review_of(booking) == ReviewStatus.SAFETY_REVIEW

    first = payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)
    second = payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)

    assert (first.review_status, second.review_status) == ("export_review", "accepted")
    changes = list(
        BookingEvent.objects.filter(booking=booking, type=EventType.PAYLOAD_REVIEW_CHANGED)
        .order_by("pk")
        .values_list("data", "actor")
    )
    assert changes == [
        ({"from": "safety_review", "to": "export_review"}, OPS.label),
        ({"from": "export_review", "to": "accepted"}, OPS.label),
    ]


def test_an_incomplete_declaration_cannot_be_accepted(deck: SlotClass) -> None:
    booking = hold(deck, {"name": "Rover"})
    with pytest.raises(PayloadNotReviewable, match="not complete"):
        payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)


def test_a_material_change_sends_an_accepted_payload_back_to_review(deck: SlotClass) -> None:
    booking = hold(deck, {**COMPLETE, "export_classification": "EAR99"})
    payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)
    customer = Actor.system("api:customer")

    booking_payload_update(
        booking_id=booking.pk,
        payload=PayloadInput.from_mapping({"description": "Now with a longer story."}),
        actor=customer,
    )
    assert review_of(booking) == ReviewStatus.ACCEPTED  # not material

    booking_payload_update(
        booking_id=booking.pk,
        payload=PayloadInput.from_mapping({"export_classification": "ITAR"}),
        actor=customer,
    )

    assert review_of(booking) == ReviewStatus.EXPORT_REVIEW
    last = BookingEvent.objects.filter(type=EventType.PAYLOAD_REVIEW_CHANGED).latest("pk")
    assert (last.data, last.actor) == ({"from": "accepted", "to": "export_review"}, customer.label)
    assert OutboxMessage.objects.filter(topic="payload.review_queue").count() == 1


def test_clearing_a_field_takes_a_reviewed_declaration_back_to_declared(deck: SlotClass) -> None:
    booking = hold(deck, {**COMPLETE, "export_classification": "ITAR"})

    booking_payload_update(
        booking_id=booking.pk,
        payload=PayloadInput.from_mapping({"dimensions_mm": None}),
        actor=Actor.system("test"),
    )

    assert review_of(booking) == ReviewStatus.DECLARED


def test_operations_get_an_email_when_a_payload_enters_review(
    deck: SlotClass, django_capture_on_commit_callbacks: Any
) -> None:
    from accounts.roles import OPERATIONS
    from tests.admin.helpers import staff_user

    staff_user(role=OPERATIONS, email="ops@moonslot.example")
    with django_capture_on_commit_callbacks(execute=True):
        booking = hold(deck, {**COMPLETE, "export_classification": "ITAR"})

    [message] = [m for m in mail.outbox if "Payload review" in str(m.subject)]
    assert message.to == ["ops@moonslot.example"]
    assert booking.reference in message.body
    assert "Export review" in message.body


# --- the manifest ------------------------------------------------------------------------


def test_an_itar_payload_is_manifested_but_not_cleared_until_export_review_clears_it(
    deck: SlotClass,
) -> None:
    booking = hold(deck, {**COMPLETE, "export_classification": "ITAR"})
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)

    first = manifest_build(mission_id=deck.mission_id, trigger="test")
    payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)
    second = manifest_build(mission_id=deck.mission_id, trigger="test")

    assert first is not None
    assert second is not None
    [line] = first.content["lines"]
    assert (line["reference"], line["review_status"], line["cleared"]) == (
        booking.reference,
        "export_review",
        False,
    )
    [line] = second.content["lines"]
    assert (line["review_status"], line["cleared"]) == ("accepted", True)
    assert second.number == first.number + 1


# --- reject: offload ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_before_launch", "percent"), [(370, 90), (200, 50), (100, 0)], ids=["90%", "50%", "0%"]
)
def test_rejecting_offloads_the_booking_with_its_tiers_refund(
    deck: SlotClass,
    django_capture_on_commit_callbacks: Any,
    days_before_launch: int,
    percent: int,
) -> None:
    user = UserFactory.create()
    organisation = OrganisationFactory.create()
    MembershipFactory.create(user=user, organisation=organisation, role=MemberRole.OWNER)
    booking = hold(
        deck,
        {**COMPLETE, "export_classification": "ITAR"},
        organisation=organisation,
        channel="web",
        actor=Actor.for_user(user),
    )
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    when = deck.mission.launch_window_start - timedelta(days=days_before_launch)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        payload_review_change(
            booking_id=booking.pk,
            to_status="rejected",
            actor=OPS,
            reason="Export licence refused.",
            now=when,
        )

    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED
    assert booking.refund_amount == booking.price_amount * percent // 100
    assert review_of(booking) == ReviewStatus.REJECTED
    deck.refresh_from_db()
    assert deck.taken_g == 0
    notice = [m for m in mail.outbox if "could not be accepted" in str(m.subject)]
    assert [m.to for m in notice] == [[user.email]]
    assert "Export licence refused." in notice[0].body
    cancelled = BookingEvent.objects.get(booking=booking, type=EventType.BOOKING_CANCELLED)
    assert cancelled.reason == "Payload rejected: Export licence refused."


def test_a_rejected_payload_is_not_reviewed_again(deck: SlotClass) -> None:
    booking = hold(deck, {**COMPLETE, "export_classification": "ITAR"})
    payload_review_change(booking_id=booking.pk, to_status="rejected", actor=OPS)

    assert Booking.objects.get(pk=booking.pk).status == BookingStatus.CANCELLED
    with pytest.raises(PayloadNotReviewable, match="no longer reviewed"):
        payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS)


# --- the payment plan's milestone --------------------------------------------------------


def test_accepting_dates_the_instalment_that_waits_for_the_payload(
    settings: Any,
) -> None:
    slot_class = deck_class()
    booking = hold(slot_class, {**COMPLETE, "export_classification": "EAR99"})
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    waiting = Instalment.objects.get(booking=booking, milestone=Milestone.PAYLOAD_ACCEPTED)
    assert waiting.due_at is None
    now = timezone.now()

    payload_review_change(booking_id=booking.pk, to_status="accepted", actor=OPS, now=now)

    waiting.refresh_from_db()
    assert waiting.due_at is not None
    assert waiting.due_at > now


# --- the site's declaration page ---------------------------------------------------------


@pytest.fixture
def member() -> User:
    return UserFactory.create()


def web_hold(slot_class: SlotClass, user: User, role: str = MemberRole.OWNER, **kw: Any) -> Any:
    organisation = OrganisationFactory.create()
    MembershipFactory.create(user=user, organisation=organisation, role=role)
    kw.setdefault("actor", Actor.for_user(user))
    return hold(slot_class, {"name": "Rover"}, organisation=organisation, channel="web", **kw)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(booking: Booking) -> str:
    return reverse("bookings:payload", args=[booking.reference])


def form_data(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Rover",
        "description": "A small rover.",
        "mass": "0.9 kg",
        "dimensions_0": "100",
        "dimensions_1": "100",
        "dimensions_2": "100",
        "power_w": "5",
        "data_kbps": "",
        "battery_wh": "",
        "pressure_kpa": "",
        "propellant_g": "",
        "other_hazard": "",
        "export_classification": "ITAR",
    }
    data.update(overrides)
    return data


def test_the_detail_page_links_to_the_declaration_page(deck: SlotClass, member: User) -> None:
    booking = web_hold(deck, member)
    response = logged_in(member).get(reverse("bookings:detail", args=[booking.reference]))
    assert page(booking) in response.content.decode()


def test_the_declaration_page_shows_the_form_at_a_pinned_query_count(
    deck: SlotClass, member: User, django_assert_max_num_queries: Any
) -> None:
    booking = web_hold(deck, member)
    client = logged_in(member)

    with django_assert_max_num_queries(6):
        response = client.get(page(booking))

    assert response.status_code == 200
    assert 'name="dimensions_0"' in response.content.decode()


def test_the_site_refuses_power_over_the_class_limit_naming_it(
    deck: SlotClass, member: User
) -> None:
    booking = web_hold(deck, member)

    response = logged_in(member).post(page(booking), form_data(power_w="45"))

    assert response.status_code == 400
    assert "45 W exceeds the class&#x27;s maximum power of 20 W." in response.content.decode()
    assert PayloadDeclaration.objects.get(booking=booking).power_w is None


def test_the_site_completes_an_itar_declaration_into_export_review(
    deck: SlotClass, member: User
) -> None:
    booking = web_hold(deck, member)

    response = logged_in(member).post(page(booking), form_data(battery_wh="40"))

    assert response.status_code == 302
    declaration = PayloadDeclaration.objects.get(booking=booking)
    assert (declaration.mass_g, declaration.dimensions_mm) == (900, [100, 100, 100])
    assert declaration.hazards == [{"type": "lithium_battery", "energy_wh": 40}]
    assert declaration.review_status == ReviewStatus.EXPORT_REVIEW
    event = BookingEvent.objects.get(booking=booking, type=EventType.PAYLOAD_REVIEW_CHANGED)
    assert event.actor_user == member


def test_after_the_cutoff_the_page_is_read_only_and_a_post_is_refused(
    deck: SlotClass, member: User
) -> None:
    booking = web_hold(deck, member)
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    mission = deck.mission
    mission.booking_cutoff = timezone.now() - timedelta(minutes=1)
    mission.save(update_fields=["booking_cutoff"])
    client = logged_in(member)

    shown = client.get(page(booking))
    refused = client.post(page(booking), form_data())

    assert "The booking cutoff has passed" in shown.content.decode()
    assert 'name="dimensions_0"' not in shown.content.decode()
    assert refused.status_code == 403
    assert PayloadDeclaration.objects.get(booking=booking).mass_g is None


def test_a_viewer_reads_the_declaration_but_cannot_change_it(deck: SlotClass, member: User) -> None:
    booking = web_hold(deck, member, role=MemberRole.VIEWER)
    client = logged_in(member)

    assert "Only an owner or booker" in client.get(page(booking)).content.decode()
    assert client.post(page(booking), form_data()).status_code == 403


def test_another_organisations_booking_is_404(deck: SlotClass, member: User) -> None:
    booking = web_hold(deck, UserFactory.create())
    assert logged_in(member).get(page(booking)).status_code == 404


# --- reminders ---------------------------------------------------------------------------


def test_incomplete_declarations_are_reminded_once_per_threshold(
    deck: SlotClass, member: User
) -> None:
    booking = web_hold(deck, member)
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"), on_account=True)
    complete = web_hold(deck, UserFactory.create())
    booking_payload_update(
        booking_id=complete.pk,
        payload=PayloadInput.from_mapping({**COMPLETE, "export_classification": "EAR99"}),
        actor=Actor.system("test"),
    )
    booking_confirm(booking_id=complete.pk, actor=Actor.system("test"), on_account=True)
    cutoff = deck.mission.booking_cutoff

    early = declarations_remind(now=cutoff - timedelta(days=40))
    at_30 = declarations_remind(now=cutoff - timedelta(days=20))
    again = declarations_remind(now=cutoff - timedelta(days=19))
    at_7 = declarations_remind(now=cutoff - timedelta(days=5))
    after = declarations_remind(now=cutoff + timedelta(minutes=1))

    assert (early, at_30, again, at_7, after) == (0, 1, 0, 1, 0)
    messages = OutboxMessage.objects.filter(topic="payload.customer_notice").order_by("pk")
    assert [m.payload for m in messages] == [
        {"booking_id": booking.pk, "kind": "reminder", "days": 30},
        {"booking_id": booking.pk, "kind": "reminder", "days": 7},
    ]
    mail.outbox.clear()
    assert outbox_process(message_id=messages[0].pk)
    [email] = mail.outbox
    assert email.to == [member.email]
    assert "please complete your payload declaration" in str(email.subject)
    assert page(booking) in email.body


def test_api_takes_the_data_rate_and_refuses_one_over_the_position_limit() -> None:
    position = LanderPositionFactory.create(name="Side mount", max_data_kbps=64)
    slot_class = SlotClassFactory.create(mission__lander=position.lander, position=position)
    client = keyed_client()
    booking = place_hold(client, slot_class, payload={"name": "Radio", "data_kbps": 32})
    assert booking["payload"]["data_kbps"] == 32

    response = client.patch(url(PAYLOAD, booking["reference"]), {"data_kbps": 128}, format="json")

    error = assert_matches_schema(response, PAYLOAD, "patch", 400)
    assert error["fields"]["payload.data_kbps"] == [
        "128 kbps exceeds the position's maximum data rate of 64 kbps."
    ]
    assert PayloadDeclaration.objects.get(booking__reference=booking["reference"]).data_kbps == 32
