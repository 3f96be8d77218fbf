"""Denied-party screening: name normalisation and matching, a match through the API's
confirm (409 screening_review, still held, hold kept), a card payment left authorised, and
sales' decisions (clear: confirmed and captured; deny: cancelled and released)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import DeniedParty, Organisation
from accounts.screening import denied_parties_screen, party_name_normalise, party_names_match
from bookings.exceptions import InvalidTransition, ScreeningReview
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    Payment,
    PaymentStatus,
    ScreeningStatus,
)
from bookings.screening import (
    SCREENING_HOLD,
    booking_screening_clear,
    booking_screening_deny,
)
from bookings.services import Actor, booking_confirm
from tests.bookings.api_helpers import CONFIRM, keyed_client, place_hold, url
from tests.factories import ResellerFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema
from tests.stripe_fake import (  # noqa: F401 (fixtures)
    VISA,
    _stripe_sandbox_process,
    held_web_booking,
    sandbox,
    stripe_sandbox,
)

pytestmark = pytest.mark.django_db

SALES = Actor.system("test:sales")


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Acme Space, Inc.", "acme space"),
        ("ACME SPACE CO., LTD.", "acme space"),
        ("Acme-Space GmbH", "acme space"),
        ("株式会社ムーンテック", "ムーンテック"),
        ("ムーンテック株式会社", "ムーンテック"),
        ("㈱ムーンテック", "ムーンテック"),
        ("Ｍｏｏｎｔｅｃｈ　ＫＫ", "moontech"),  # full-width letters and space
        ("Co Op Space Ltd", "co op space"),  # only trailing company forms go
        ("  Inc.  ", "inc"),  # a name that is only a form keeps it
    ],
)
def test_names_are_normalised_for_comparison(raw: str, normalised: str) -> None:
    assert party_name_normalise(raw) == normalised


@pytest.mark.parametrize(
    ("a", "b", "matches"),
    [
        ("acme space", "acme space", True),
        ("acme space systems", "acme space", True),  # whole words contained
        ("acme spaceworks", "acme space", False),  # not whole words
        ("moon robotics", "moon", False),  # one short word would stop everyone
        ("embargoed aerospace holdings", "embargoed aerospace", True),
        ("orbital", "orbital", True),  # equal always matches
        ("", "acme", False),
    ],
)
def test_names_match_when_equal_or_contained_as_whole_words(a: str, b: str, matches: bool) -> None:
    assert party_names_match(a, b) is matches
    assert party_names_match(b, a) is matches


def test_country_must_match_unless_the_entry_or_the_customer_has_none() -> None:
    DeniedParty.objects.create(name="Sanctioned Orbital Trading", country="RU")
    DeniedParty.objects.create(name="Example Embargoed Aerospace")
    DeniedParty.objects.create(name="Inactive Launch Co", active=False)

    assert denied_parties_screen(names=["Sanctioned Orbital Trading LLC"], country="JP") == []
    assert len(denied_parties_screen(names=["Sanctioned Orbital Trading LLC"], country="ru")) == 1
    assert len(denied_parties_screen(names=["Sanctioned Orbital Trading"], country="")) == 1
    assert len(denied_parties_screen(names=["Example Embargoed Aerospace KK"], country="JP")) == 1
    assert denied_parties_screen(names=["Inactive Launch"], country="") == []


def test_screening_an_empty_list_is_one_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert denied_parties_screen(names=["Anyone Ltd"], country="JP") == []


# --- through the API ---------------------------------------------------------------------


@pytest.fixture
def deck() -> Any:
    return SlotClassFactory.create()


def test_a_match_refuses_the_api_confirm_with_409_and_keeps_the_booking_held(
    deck: Any, django_capture_on_commit_callbacks: Any
) -> None:
    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    reseller = ResellerFactory.create()
    client = keyed_client(reseller)
    held = place_hold(client, deck, customer={"organisation": "Embargoed Aerospace Ltd."})
    before = Booking.objects.get(reference=held["reference"]).hold_expires_at
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(CONFIRM, held["reference"]), {}, format="json")

    body = assert_matches_schema(response, CONFIRM, "post", 409)
    assert body["code"] == "screening_review"
    assert "compliance review" in body["detail"]
    assert "Embargoed" not in body["detail"]  # the list entry is not disclosed
    booking = Booking.objects.get(reference=held["reference"])
    assert booking.status == BookingStatus.HELD
    assert booking.screening_status == ScreeningStatus.MATCH
    assert "Embargoed Aerospace" in booking.screening_note
    assert before is not None
    assert booking.hold_expires_at is not None
    assert booking.hold_expires_at >= timezone.now() + SCREENING_HOLD - timedelta(minutes=1)
    assert booking.hold_expires_at > before
    event = BookingEvent.objects.get(booking=booking, type="booking.screening_review")
    assert event.data["on_account"] is True
    assert "Embargoed" not in str(event.data)  # the reseller's events feed shows data
    assert [m.to for m in mail.outbox] == [["sales@moonslot.example"]]
    assert booking.reference in mail.outbox[0].body

    again = client.post(url(CONFIRM, held["reference"]), {}, format="json")
    assert again.status_code == 409
    assert BookingEvent.objects.filter(type="booking.screening_review").count() == 1


def test_no_match_confirms_and_records_the_clear_screening(deck: Any) -> None:
    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    client = keyed_client()
    held = place_hold(client, deck, customer={"organisation": "Friendly Rovers"})

    response = client.post(url(CONFIRM, held["reference"]), {}, format="json")

    assert assert_matches_schema(response, CONFIRM, "post", 200)["status"] == "confirmed"
    booking = Booking.objects.get(reference=held["reference"])
    assert booking.screening_status == ScreeningStatus.CLEAR


def test_sales_clearing_an_on_account_match_confirms_it_on_account(deck: Any) -> None:
    reseller = ResellerFactory.create(name="Embargoed Aerospace Reseller", country="JP")
    DeniedParty.objects.create(name="Embargoed Aerospace Reseller", country="JP")
    client = keyed_client(reseller)
    held = place_hold(client, deck)
    assert client.post(url(CONFIRM, held["reference"]), {}, format="json").status_code == 409
    booking = Booking.objects.get(reference=held["reference"])

    cleared = booking_screening_clear(booking_id=booking.pk, actor=SALES, note="Other company.")

    assert (cleared.status, cleared.on_account) == (BookingStatus.CONFIRMED, True)
    booking.refresh_from_db()
    assert booking.screening_status == ScreeningStatus.CLEARED
    assert BookingEvent.objects.filter(booking=booking, type="booking.screening_cleared").exists()
    # Cleared stays cleared: a later confirmation is not screened again.
    assert booking_confirm(booking_id=booking.pk, actor=SALES).status == BookingStatus.CONFIRMED


def test_sales_deny_cancels_the_hold_and_a_second_decision_is_refused(deck: Any) -> None:
    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    client = keyed_client()
    held = place_hold(client, deck, customer={"organisation": "Embargoed Aerospace"})
    client.post(url(CONFIRM, held["reference"]), {}, format="json")
    booking = Booking.objects.get(reference=held["reference"])

    denied = booking_screening_deny(booking_id=booking.pk, actor=SALES, note="Listed party.")

    assert denied.status == BookingStatus.CANCELLED
    assert denied.refund_amount == 0
    booking.refresh_from_db()
    assert booking.screening_status == ScreeningStatus.DENIED
    deck.refresh_from_db()
    assert deck.taken_g == 0
    with pytest.raises(InvalidTransition):
        booking_screening_clear(booking_id=booking.pk, actor=SALES)
    # Deny again: nothing more happens.
    assert booking_screening_deny(booking_id=booking.pk, actor=SALES).status == "cancelled"


def test_clearing_a_booking_that_was_never_matched_is_refused(deck: Any) -> None:
    held = place_hold(keyed_client(), deck)
    booking = Booking.objects.get(reference=held["reference"])
    with pytest.raises(InvalidTransition):
        booking_screening_clear(booking_id=booking.pk, actor=SALES)


# --- a card payment ----------------------------------------------------------------------


def _flagged_web_booking() -> Booking:
    booking: Booking = held_web_booking(price=1_200_000, currency="JPY")
    organisation: Organisation = booking.organisation
    Organisation.objects.filter(pk=organisation.pk).update(name="Embargoed Aerospace K.K.")
    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    return booking


@pytest.mark.usefixtures("stripe_sandbox")
def test_card_payment_with_a_match_stays_authorised_until_sales_clear_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    booking = _flagged_web_booking()
    assert booking.created_by is not None
    client = Client()
    client.force_login(booking.created_by)
    token = sandbox().card_token(VISA)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payments:card", args=[booking.reference]), {"token": token})

    assert response.status_code == 302
    payment = Payment.objects.get(booking=booking)
    assert payment.status == PaymentStatus.AUTHORISED  # not captured, not released
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == ("requires_capture")
    booking.refresh_from_db()
    assert (booking.status, booking.screening_status) == ("held", ScreeningStatus.MATCH)
    page = client.get(response["Location"])
    assert "compliance review" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        booking_screening_clear(booking_id=booking.pk, actor=SALES, note="Not them.")

    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == BookingStatus.CONFIRMED
    assert booking.on_account is False
    assert payment.status == PaymentStatus.SUCCEEDED
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == "succeeded"


@pytest.mark.usefixtures("stripe_sandbox")
def test_card_payment_with_a_match_is_released_when_sales_deny(
    django_capture_on_commit_callbacks: Any,
) -> None:
    booking = _flagged_web_booking()
    assert booking.created_by is not None
    client = Client()
    client.force_login(booking.created_by)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("payments:card", args=[booking.reference]),
            {"token": sandbox().card_token(VISA)},
        )

    with django_capture_on_commit_callbacks(execute=True):
        booking_screening_deny(booking_id=booking.pk, actor=SALES, note="Listed.")

    payment = Payment.objects.get(booking=booking)
    assert payment.status == PaymentStatus.CANCELED
    assert sandbox().intent(str(payment.stripe_payment_intent_id))["status"] == "canceled"
    booking.refresh_from_db()
    assert booking.status == BookingStatus.CANCELLED


def test_confirm_in_a_callers_transaction_keeps_the_match_when_caught(deck: Any) -> None:
    from django.db import transaction

    DeniedParty.objects.create(name="Embargoed Aerospace", country="")
    held = place_hold(keyed_client(), deck, customer={"organisation": "Embargoed Aerospace"})
    booking = Booking.objects.get(reference=held["reference"])

    with transaction.atomic(), pytest.raises(ScreeningReview):
        booking_confirm(booking_id=booking.pk, actor=SALES)

    booking.refresh_from_db()
    assert booking.screening_status == ScreeningStatus.MATCH
