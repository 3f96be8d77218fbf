"""Enterprise holds: sales hold capacity for days from the admin and e-mail the customer a
completion link; the customer accepts the contract terms on the link's page (no sign-in),
and only then can the booking be confirmed or paid."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import MemberRole, Membership, Organisation, OrganisationKind, User
from accounts.roles import OPERATIONS, SALES
from bookings import enterprise
from bookings.enterprise import (
    CONTRACT_ACCEPTED,
    LINK_SENT,
    EnterpriseHoldRequest,
    enterprise_contract_accept,
    enterprise_hold_place,
)
from bookings.enterprise_views import BAD_LINK_LIMIT
from bookings.exceptions import ContractNotAccepted, HoldExpired
from bookings.models import Booking, BookingEvent, BookingStatus, InstalmentKind
from bookings.services import Actor, booking_cancel, booking_confirm
from bookings.validation import CustomerInput
from marketplace.models import SlotClass
from tests.admin.helpers import admin_client_with_mfa, staff_user
from tests.bookings.concurrency_helpers import run_together
from tests.bookings.plan_helpers import DECK_MASS_G, deck_class
from tests.factories import OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db

NEW = "/admin/enterprise-holds/new/"
CUSTOMER_EMAIL = "procurement@lunar-labs.example"


def detail_url(booking: Booking) -> str:
    return f"/admin/enterprise-holds/{booking.pk}/"


def complete_url(token: str) -> str:
    return f"/complete/{token}/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def company() -> Organisation:
    return OrganisationFactory.create(name="Lunar Labs K.K.", kind=OrganisationKind.CUSTOMER)


@pytest.fixture
def deck() -> SlotClass:
    return deck_class()


@pytest.fixture
def sales_client() -> Client:
    return admin_client_with_mfa(staff_user(role=SALES, email="sales@moonslot.example"))


def hold_form(company: Organisation, deck: SlotClass, **overrides: Any) -> dict[str, Any]:
    data = {
        "organisation": str(company.pk),
        "slot_class": str(deck.pk),
        "mass_g": str(DECK_MASS_G),
        "currency": "JPY",
        "hold_days": "14",
        "contract_version": "2026-1",
        "customer_name": "Aiko Tanaka",
        "customer_email": CUSTOMER_EMAIL,
        "language": "en",
        "payload_name": "Regolith sampler",
    }
    data.update(overrides)
    return data


def place(company: Organisation, deck: SlotClass, **overrides: Any) -> Booking:
    """An enterprise hold placed through the service, as the admin page does."""
    fields: dict[str, Any] = {
        "organisation": company,
        "slot_class_id": deck.pk,
        "currency": "JPY",
        "hold_days": 14,
        "customer": CustomerInput(name="Aiko Tanaka", email=CUSTOMER_EMAIL),
        "contract_version": "2026-1",
        "mass_g": DECK_MASS_G,
    }
    fields.update(overrides)
    return enterprise_hold_place(EnterpriseHoldRequest(**fields), actor=Actor.system("test"))


def accept_form(booking: Booking, **overrides: str) -> dict[str, str]:
    data = {
        "signer_name": "Aiko Tanaka",
        "signer_email": "aiko@lunar-labs.example",
        "accept": "on",
        "contract_version": booking.contract_version,
    }
    data.update(overrides)
    return data


# --- sales place the hold ------------------------------------------------------------


def test_sales_place_a_14_day_hold_and_the_customer_is_emailed_the_link(
    sales_client: Client,
    company: Organisation,
    deck: SlotClass,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        response = sales_client.post(NEW, hold_form(company, deck))

    booking = Booking.objects.get()
    assert response.status_code == 302
    assert response["Location"] == detail_url(booking)
    assert booking.status == BookingStatus.HELD
    assert booking.channel == "admin"
    assert booking.organisation == company
    assert booking.hold_expires_at is not None
    held_for = booking.hold_expires_at - before
    assert timedelta(days=14) <= held_for < timedelta(days=14, minutes=1)
    assert booking.contract_version == "2026-1"
    assert booking.contract_accepted_at is None
    assert booking.completion_token
    assert len(booking.completion_token) >= 43
    # The plan's instalments come with the hold: the deposit first.
    kinds = list(booking.instalments.order_by("position").values_list("kind", flat=True))
    assert kinds[0] == InstalmentKind.DEPOSIT
    event = BookingEvent.objects.get(booking=booking, type=LINK_SENT)
    assert event.data == {"contract_version": "2026-1"}  # never the token
    assert booking.completion_token not in str(event.data)

    (message,) = [m for m in mail.outbox if CUSTOMER_EMAIL in m.to]
    assert booking.reference in message.subject
    assert settings.SITE_URL.rstrip("/") + complete_url(booking.completion_token) in message.body
    assert "2026-1" in message.body

    page = sales_client.get(detail_url(booking))
    assert page.status_code == 200
    assert complete_url(booking.completion_token) in page.content.decode()
    # Sales find both pages from the bookings admin.
    change = sales_client.get(f"/admin/bookings/booking/{booking.pk}/change/").content.decode()
    assert f'href="{detail_url(booking)}"' in change
    assert f'href="{NEW}"' in sales_client.get("/admin/bookings/booking/").content.decode()


def test_the_form_defaults_to_the_configured_contract_version(
    sales_client: Client, settings: Any
) -> None:
    settings.MOONSLOT_CONTRACT_VERSION = "2027-3"
    page = sales_client.get(NEW)
    assert page.status_code == 200
    assert 'value="2027-3"' in page.content.decode()


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"hold_days": "0"}, "hold_days", "at least 1 day"),
        ({"hold_days": "31"}, "hold_days", "at most 30 days"),
        ({"hold_days": ""}, "hold_days", "length in days"),
        ({"customer_email": ""}, "customer_email", "the link goes there"),
        ({"customer_email": "not-an-address"}, "customer_email", "valid email"),
        ({"contract_version": "../etc"}, "contract_version", "Letters, digits"),
    ],
)
def test_a_hold_outside_the_bounds_is_refused_with_a_clear_message(
    sales_client: Client,
    company: Organisation,
    deck: SlotClass,
    overrides: dict[str, str],
    field: str,
    text: str,
) -> None:
    response = sales_client.post(NEW, hold_form(company, deck, **overrides))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors
    assert text.lower() in " ".join(errors[field]).lower()
    assert not Booking.objects.exists()


def test_a_personal_account_cannot_get_an_enterprise_hold(
    sales_client: Client, deck: SlotClass
) -> None:
    personal = OrganisationFactory.create(kind=OrganisationKind.PERSONAL)
    response = sales_client.post(NEW, hold_form(personal, deck))
    assert response.status_code == 200
    assert "customer companies" in " ".join(response.context["form"].errors["organisation"])
    assert not Booking.objects.exists()


def test_only_those_who_place_holds_open_the_enterprise_pages(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    operations = admin_client_with_mfa(staff_user(role=OPERATIONS, email="ops@moonslot.example"))
    assert operations.get(NEW).status_code == 403
    assert operations.get(detail_url(booking)).status_code == 403
    assert Client().get(NEW).status_code == 302  # to sign in


def test_sales_resend_the_same_link(
    sales_client: Client,
    company: Organisation,
    deck: SlotClass,
    django_capture_on_commit_callbacks: Any,
) -> None:
    booking = place(company, deck)
    with django_capture_on_commit_callbacks(execute=True):
        response = sales_client.post(detail_url(booking), {"language": "ja"})
    assert response.status_code == 302
    assert any("sent again" in text for text in messages_of(response))
    sent = [m for m in mail.outbox if CUSTOMER_EMAIL in m.to]
    assert len(sent) == 1
    assert str(booking.completion_token) in str(sent[0].body)
    assert BookingEvent.objects.filter(booking=booking, type=LINK_SENT).count() == 2


def test_issuing_a_link_twice_keeps_the_first_token(company: Organisation, deck: SlotClass) -> None:
    booking = place(company, deck)
    again = enterprise.enterprise_hold_link_issue(
        booking_id=booking.pk, actor=Actor.system("test"), contract_version="2099-9"
    )
    assert again.completion_token == booking.completion_token
    assert again.contract_version == "2026-1"
    assert BookingEvent.objects.filter(booking=booking, type=LINK_SENT).count() == 1


# --- the customer completes it -------------------------------------------------------------


def test_the_customer_reads_the_booking_schedule_and_terms_without_signing_in(
    company: Organisation, deck: SlotClass, django_assert_max_num_queries: Any
) -> None:
    booking = place(company, deck)
    with django_assert_max_num_queries(8):
        response = Client().get(complete_url(str(booking.completion_token)))
    assert response.status_code == 200
    page = response.content.decode()
    assert booking.reference in page
    assert "450,000,000" in page  # the price
    assert "90,000,000" in page  # the 20% deposit
    assert "Build start" in page
    assert "Payload accepted" in page
    assert "version 2026-1" in page
    assert response["Referrer-Policy"] == "no-referrer"
    assert "noindex" in response["X-Robots-Tag"]


def test_submitting_without_accepting_the_terms_is_refused_clearly(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    data = accept_form(booking)
    del data["accept"]
    response = Client().post(complete_url(str(booking.completion_token)), data)
    assert response.status_code == 200
    assert "Tick the box to accept the contract terms" in response.content.decode()
    booking.refresh_from_db()
    assert booking.contract_accepted_at is None


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"signer_name": "   "}, "Give the name of the person who accepts."),
        ({"signer_email": "aiko@"}, "Enter a valid e-mail address"),
        ({"signer_email": ""}, "Give your e-mail address."),
    ],
)
def test_the_signer_must_be_named_with_a_valid_address(
    company: Organisation, deck: SlotClass, overrides: dict[str, str], text: str
) -> None:
    booking = place(company, deck)
    response = Client().post(
        complete_url(str(booking.completion_token)), accept_form(booking, **overrides)
    )
    assert response.status_code == 200
    assert text in response.content.decode()
    booking.refresh_from_db()
    assert booking.contract_accepted_at is None


def test_accepting_records_the_version_the_signer_and_the_time_once(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    client = Client()
    url = complete_url(str(booking.completion_token))
    before = timezone.now()
    response = client.post(url, accept_form(booking))
    assert response.status_code == 302
    assert response["Location"] == url
    again = client.post(url, accept_form(booking, signer_name="Someone Else"))  # a double submit
    assert again.status_code == 200

    booking.refresh_from_db()
    assert booking.contract_version == "2026-1"
    assert booking.contract_signer_name == "Aiko Tanaka"
    assert booking.contract_signer_email == "aiko@lunar-labs.example"
    assert booking.contract_accepted_at is not None
    assert booking.contract_accepted_at >= before
    (event,) = BookingEvent.objects.filter(booking=booking, type=CONTRACT_ACCEPTED)
    assert event.data == {"contract_version": "2026-1"}
    assert "Aiko Tanaka" in event.reason
    page = client.get(url).content.decode()
    assert "accepted by Aiko Tanaka" in page
    assert "Pay the deposit" in page
    assert 'name="signer_name"' not in page


def test_terms_changed_while_reading_are_not_accepted(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    response = Client().post(
        complete_url(str(booking.completion_token)),
        accept_form(booking, contract_version="2025-9"),
    )
    assert response.status_code == 302
    assert any("changed while you were reading" in m for m in messages_of(response))
    booking.refresh_from_db()
    assert booking.contract_accepted_at is None


def test_a_wrong_link_is_a_plain_404_page(company: Organisation, deck: SlotClass) -> None:
    booking = place(company, deck)
    token = str(booking.completion_token)
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for url in (complete_url(wrong), complete_url("short"), "/complete/%E2%9C%93/"):
        response = Client().get(url)
        assert response.status_code == 404
        assert booking.reference not in response.content.decode()
    assert "not valid" in Client().get(complete_url(wrong)).content.decode()


def test_a_lapsed_or_cancelled_hold_is_a_410_page_that_says_nothing_of_it(
    company: Organisation, deck: SlotClass
) -> None:
    lapsed = place(company, deck)
    Booking.objects.filter(pk=lapsed.pk).update(
        hold_expires_at=timezone.now() - timedelta(minutes=1)
    )
    cancelled = place(company, deck, mass_g=1000)
    booking_cancel(booking_id=cancelled.pk, actor=Actor.system("test"))
    for booking in (lapsed, cancelled):
        url = complete_url(str(booking.completion_token))
        response = Client().get(url)
        assert response.status_code == 410
        page = response.content.decode()
        assert "has closed" in page
        assert booking.reference not in page
        posted = Client().post(url, accept_form(booking))
        assert posted.status_code == 410
        booking.refresh_from_db()
        assert booking.contract_accepted_at is None


def test_acceptance_after_the_hold_lapsed_is_refused(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    assert booking.hold_expires_at is not None
    with pytest.raises(HoldExpired):
        enterprise_contract_accept(
            booking_id=booking.pk,
            token=str(booking.completion_token),
            signer_name="Aiko Tanaka",
            signer_email="aiko@lunar-labs.example",
            contract_version="2026-1",
            now=booking.hold_expires_at + timedelta(seconds=1),
        )


def test_a_client_trying_many_wrong_links_is_slowed_down(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    client = Client()
    for attempt in range(BAD_LINK_LIMIT):
        assert client.get(complete_url(f"wrong-token-number-{attempt:04d}")).status_code == 404
    throttled = client.get(complete_url(str(booking.completion_token)))
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert other.get(complete_url(str(booking.completion_token))).status_code == 200


# --- confirmation needs the contract --------------------------------------------------------


def test_an_enterprise_hold_is_not_confirmed_before_the_contract_is_accepted(
    sales_client: Client, company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    with pytest.raises(ContractNotAccepted, match="accepts the contract terms"):
        booking_confirm(booking_id=booking.pk, actor=Actor.system("test"))

    response = sales_client.post(
        f"/admin/bookings/booking/{booking.pk}/confirm/", {"reason": "", "on_account": "on"}
    )
    assert response.status_code == 302
    assert any("accepts the contract terms" in m for m in messages_of(response))
    booking.refresh_from_db()
    assert booking.status == BookingStatus.HELD

    enterprise_contract_accept(
        booking_id=booking.pk,
        token=str(booking.completion_token),
        signer_name="Aiko Tanaka",
        signer_email="aiko@lunar-labs.example",
        contract_version="2026-1",
    )
    confirmed = booking_confirm(booking_id=booking.pk, actor=Actor.system("test"))
    assert confirmed.status == BookingStatus.CONFIRMED


# --- paying: the invited address joins the organisation ---------------------------------------


def accepted(company: Organisation, deck: SlotClass) -> Booking:
    booking = place(company, deck)
    return enterprise_contract_accept(
        booking_id=booking.pk,
        token=str(booking.completion_token),
        signer_name="Aiko Tanaka",
        signer_email=CUSTOMER_EMAIL,
        contract_version="2026-1",
    )


def signed_in(email: str) -> tuple[Client, User]:
    user = UserFactory.create(email=email)
    client = Client()
    client.force_login(user)
    return client, user


def test_the_invited_customer_signs_in_joins_as_booker_and_goes_to_pay(
    company: Organisation, deck: SlotClass
) -> None:
    booking = accepted(company, deck)
    url = complete_url(str(booking.completion_token))
    anonymous = Client().get(url).content.decode()
    assert "/accounts/login/?next=" in anonymous

    client, user = signed_in(CUSTOMER_EMAIL.upper())
    assert 'data-next-step="join"' in client.get(url).content.decode()
    back = client.get(url + "join/")  # where signing in returns to: nothing joins on a GET
    assert back.status_code == 302
    assert back["Location"] == url
    assert not Membership.objects.filter(user=user, organisation=company).exists()
    response = client.post(url + "join/")
    assert response.status_code == 302
    assert response["Location"] == f"/bookings/{booking.reference}/pay/"
    membership = Membership.objects.get(user=user, organisation=company)
    assert membership.role == MemberRole.BOOKER
    assert client.post(url + "join/").status_code == 302  # again: nothing new
    assert Membership.objects.filter(user=user).count() == 1
    assert 'data-next-step="pay"' in client.get(url).content.decode()
    history = client.get(f"/bookings/{booking.reference}/").content.decode()
    assert "Contract terms accepted" in history
    assert "booking.contract_accepted" not in history


def test_the_pay_page_refuses_a_card_before_the_contract_is_accepted(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    client, user = signed_in("owner@lunar-labs.example")
    Membership.objects.create(user=user, organisation=company, role=MemberRole.OWNER)
    page = client.get(f"/bookings/{booking.reference}/pay/").content.decode()
    assert "Accept the contract terms first" in page
    assert 'id="card-form"' not in page

    enterprise_contract_accept(
        booking_id=booking.pk,
        token=str(booking.completion_token),
        signer_name="Aiko Tanaka",
        signer_email=CUSTOMER_EMAIL,
        contract_version="2026-1",
    )
    page = client.get(f"/bookings/{booking.reference}/pay/").content.decode()
    assert "Accept the contract terms first" not in page
    assert 'id="card-form"' in page  # the ¥90,000,000 deposit fits on one card payment


def test_the_accepted_page_shows_how_to_pay_by_transfer(
    company: Organisation, deck: SlotClass, settings: Any
) -> None:
    settings.MOONSLOT_BANK_DETAILS = "Moonslot Bank\\nAccount 1234567"
    booking = accepted(company, deck)
    page = Client().get(complete_url(str(booking.completion_token))).content.decode()
    assert str(booking.payment_reference) in page
    assert "Account 1234567" in page
    assert "90,000,000" in page


def test_another_address_cannot_join_through_the_link(
    company: Organisation, deck: SlotClass
) -> None:
    booking = accepted(company, deck)
    client, user = signed_in("someone-else@example.com")
    url = complete_url(str(booking.completion_token))
    assert 'data-next-step="wrong_account"' in client.get(url).content.decode()
    response = client.post(url + "join/")
    assert response.status_code == 302
    assert any("another e-mail address" in m for m in messages_of(response))
    assert not Membership.objects.filter(user=user, organisation=company).exists()


def test_nobody_joins_before_the_contract_is_accepted(
    company: Organisation, deck: SlotClass
) -> None:
    booking = place(company, deck)
    client, user = signed_in(CUSTOMER_EMAIL)
    response = client.post(complete_url(str(booking.completion_token)) + "join/")
    assert response.status_code == 302
    assert not Membership.objects.filter(user=user, organisation=company).exists()


def test_the_link_email_names_the_booking_and_the_deadline(
    company: Organisation, deck: SlotClass, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        booking = place(company, deck, language="ja")
    # The organisation's desk gets the usual hold notice; the customer gets the link.
    (message,) = [m for m in mail.outbox if m.to == [CUSTOMER_EMAIL]]
    assert re.search(r"/complete/[A-Za-z0-9_-]{43}/", str(message.body))
    assert booking.reference in message.body
    assert booking.hold_expires_at is not None
    assert f"{booking.hold_expires_at:%Y-%m-%d %H:%M}" in message.body


# --- a double submit, for real: threads on PostgreSQL -------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.usefixtures("require_postgres")
def test_simultaneous_acceptances_record_one_signer_once() -> None:
    company = OrganisationFactory.create(kind=OrganisationKind.CUSTOMER)
    booking = place(company, deck_class())
    token = str(booking.completion_token)

    def accept(index: int) -> Booking:
        return enterprise_contract_accept(
            booking_id=booking.pk,
            token=token,
            signer_name=f"Signer {index}",
            signer_email=f"signer{index}@lunar-labs.example",
            contract_version="2026-1",
        )

    outcomes = run_together([partial(accept, index) for index in range(8)])

    assert [o.error for o in outcomes] == [None] * 8
    booking.refresh_from_db()
    (event,) = BookingEvent.objects.filter(booking=booking, type=CONTRACT_ACCEPTED)
    # Every caller saw the one acceptance that won, whoever they were.
    assert {o.value.contract_signer_name for o in outcomes if o.value} == {
        booking.contract_signer_name
    }
    assert booking.contract_signer_name in event.reason
