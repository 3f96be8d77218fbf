"""A customer's whole journey in a real browser: sign up, verify the e-mail, book a message
capsule from the mission page, pay on the pay page with the sandbox's Stripe.js card form
(a good card, a declined one, one that asks for 3-D Secure), and find the booking confirmed.

Everything happens through the pages; the database is only set up (the catalogue) and read
(to check what the pages claim). The sandbox authorises the card when the site asks, and
posts its signed webhooks back to the live server about a second later.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.utils import timezone

from accounts.models import User
from bookings.models import Booking, BookingStatus, Payment, PaymentStatus, StripeEvent
from marketplace.models import SlotClass
from tests.browser.conftest import PageProblems, Shot, quiet_site
from tests.factories import MissionFactory, SlotClassFactory, UserFactory
from tests.stripe_fake import DECLINED_AT_CHARGE, THREE_D_SECURE, VISA

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it: a skip here, a failure with CI=true
    expect = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("sandbox_webhooks"),
]

PASSWORD = "Regolith-sampler-2026"
MESSAGE = "Greetings from Earth — see you on the Moon."
# The sandbox's webhooks leave about a second after the event; processing takes less.
WEBHOOK_DEADLINE_S = 15.0
CONFIRMED_DEADLINE_S = 15.0


# --- the catalogue ------------------------------------------------------------------------


@pytest.fixture
def capsules() -> SlotClass:
    """A mission on sale with a demo-like message capsule class: sold on the web, per unit,
    priced in yen and dollars."""
    mission = MissionFactory.create(
        code="M4",
        name="Mission 4 — Near side",
        name_ja="ミッション4 — 月の表側",
        landing_site="Mare Frigoris, lunar near side",
    )
    return SlotClassFactory.per_unit(
        mission=mission,
        name="Message capsule",
        name_ja="メッセージカプセル",
        prices={"JPY": 30_000, "USD": 200_00},
        capacity_units=2_000,
        max_quantity=10,
        sold_on_web=True,
        hold_minutes_web=20,
    )


# --- steps a person takes -------------------------------------------------------------


def url(live_server: Any, path: str) -> str:
    return f"{live_server.url}{path}"


def main_navigation(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Main navigation")


def switch_language(page: Page, language: str) -> None:
    page.get_by_role("button", name=language).click()
    page.wait_for_load_state()


def verification_link(address: str) -> str:
    sent = [m for m in mail.outbox if address in m.to]
    assert len(sent) == 1, [m.subject for m in mail.outbox]
    found = re.search(r"https?://\S+/accounts/confirm-email/\S+/", str(sent[0].body))
    assert found, sent[0].body
    return found.group(0)


def sign_up(page: Page, live_server: Any, shot: Shot, address: str) -> None:
    page.get_by_role("link", name="Create account").click()
    expect(page.get_by_role("heading", name="Sign Up")).to_be_visible()
    form = page.locator("form.account-form")
    form.locator("input[name=email]").fill(address)
    form.locator("input[name=password1]").fill(PASSWORD)
    form.locator("input[name=password2]").fill(PASSWORD)
    shot("sign-up")
    form.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    shot("verification-sent")

    page.goto(verification_link(address))
    expect(page.get_by_role("heading", name="Confirm Email Address")).to_be_visible()
    shot("confirm-email")
    page.get_by_role("button", name="Confirm").click()
    # Confirming in the browser that signed up signs the new customer in.
    expect(page.get_by_role("link", name="Sign out")).to_be_visible()
    expect(page.get_by_role("link", name="My bookings")).to_be_visible()


def sign_in(page: Page, address: str) -> None:
    page.get_by_role("link", name="Sign in").click()
    form = page.locator("form.account-form")
    form.locator("input[name=login]").fill(address)
    form.locator("input[name=password]").fill(PASSWORD)
    form.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("link", name="Sign out")).to_be_visible()


def verified_customer(address: str) -> User:
    """An account made before this visit, its e-mail address verified."""
    with quiet_site():
        user = UserFactory.create(email=address, password=PASSWORD)
        EmailAddress.objects.create(user=user, email=address, verified=True, primary=True)
    return user


def hold_capsules(
    page: Page, shot: Shot, slot_class: SlotClass, *, quantity: int, currency: str, price: str
) -> str:
    """From the catalogue to the hold page; returns the booking's reference."""
    main_navigation(page).get_by_role("link", name="Missions").click()
    page.get_by_role("link", name=slot_class.mission.name, exact=True).click()
    card = page.locator(f"#class-{slot_class.pk}")
    expect(card.get_by_role("heading", name="Message capsule")).to_be_visible()
    shot("mission")
    card.get_by_role("button", name="Book").click()

    expect(page.get_by_role("heading", name="Book Message capsule")).to_be_visible()
    page.get_by_label("Number of units").fill(str(quantity))
    page.locator("select[name=currency]").select_option(currency)
    page.get_by_role("button", name="Update price").click()
    expect(page.locator(".booking-price .quote__total")).to_have_text(price)
    page.get_by_label("Your message").fill(MESSAGE)
    page.get_by_label("This item is inert").check()
    page.get_by_label("I accept the Moonslot booking terms").check()
    shot("booking-form")
    page.get_by_role("button", name="Place hold").click()

    expect(page.locator(".messages")).to_contain_text("is placed")
    expect(page.locator(".badge")).to_have_text("Held")
    clock = page.locator("[data-countdown]")
    expect(clock).to_have_text(re.compile(r"^(19|20):\d\d$"))
    # The countdown ticks in the browser, from the seconds the server gave.
    shown = clock.inner_text()
    expect(clock).not_to_have_text(shown, timeout=3_000)
    reference = page.locator("h1.reference").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]+", reference), reference
    shot("hold")
    return reference


def open_pay_page(page: Page, price: str) -> None:
    page.get_by_role("link", name="Pay", exact=True).click()
    expect(page.get_by_role("heading", name="Amount to pay")).to_be_visible()
    expect(page.locator("[data-pay-amount]")).to_have_text(price)
    expect(page.locator("[data-pay-countdown]")).to_have_text(re.compile(r"^\d+:\d\d$"))


def fill_card(page: Page, number: str) -> None:
    """The sandbox's Stripe.js mounts plain inputs where Stripe's mounts its iframe."""
    card = page.locator("#card-element")
    card.get_by_placeholder("number").fill(number)
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("34")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("10001")


def pay_by_card(page: Page, number: str, price: str, shot: Shot | None = None) -> None:
    """Type the card into the card form and press Pay."""
    fill_card(page, number)
    if shot is not None:
        shot("card")
    # The form posts once Stripe.js has turned the card into a token; whatever the outcome,
    # the server answers with a page (the booking, or the pay page again).
    with page.expect_navigation():
        page.get_by_role("button", name=f"Pay {price}").click()


def wait_until_confirmed(page: Page, reference: str) -> None:
    """The booking page, reloaded until it says confirmed: the outcome may also come by
    webhook, a second or so after the payment."""
    heading = page.locator("h1.booking-head__title")
    deadline = time.monotonic() + CONFIRMED_DEADLINE_S
    while not heading.is_visible():
        if time.monotonic() > deadline:
            raise AssertionError(f"{reference} not confirmed: {page.locator('main').inner_text()}")
        page.wait_for_timeout(500)
        page.reload()
    expect(heading).to_have_text(f"Confirmed — your reference is {reference}")
    expect(page.locator(".badge")).to_have_text("Confirmed")


def see_in_my_bookings(page: Page, reference: str, status: str) -> None:
    main_navigation(page).get_by_role("link", name="My bookings").click()
    expect(page.get_by_role("heading", name="My bookings")).to_be_visible()
    row = page.locator("tr", has=page.get_by_role("link", name=reference))
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text(status)


def wait_for_webhooks(*types: str) -> None:
    """Bounded polling until the sandbox's events of these types have been received and
    processed by the site."""
    deadline = time.monotonic() + WEBHOOK_DEADLINE_S
    while True:
        with quiet_site():
            seen = list(StripeEvent.objects.values_list("type", "processed_at"))
        done = {type for type, processed_at in seen if processed_at is not None}
        if set(types) <= done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"webhooks {sorted(set(types) - done)} not processed: {seen}")
        time.sleep(0.2)


def confirmed_mails(reference: str) -> list[Any]:
    return [m for m in mail.outbox if m.subject == f"[Moonslot] Booking {reference} is confirmed"]


def assert_paid_once(reference: str, address: str, *, amount: int, currency: str) -> None:
    with quiet_site():
        booking = Booking.objects.get(reference=reference)
        assert booking.status == BookingStatus.CONFIRMED
        assert booking.confirmed_at is not None
        assert booking.created_by is not None
        assert booking.created_by.email == address
        assert (booking.price_amount, booking.currency) == (amount, currency)
        # Authorised at the pay page, captured once the booking was confirmed.
        paid = booking.payments.filter(status=PaymentStatus.SUCCEEDED)
        assert paid.count() == 1
        payment = paid.get()
        assert (payment.amount, payment.currency) == (amount, currency)
        assert payment.authorised_at is not None
        assert payment.succeeded_at is not None
        mails = confirmed_mails(reference)
        assert len(mails) == 1, [m.subject for m in mail.outbox]
        assert mails[0].to == [address]


def returning_customer_pays(
    page: Page,
    live_server: Any,
    shot: Shot,
    slot_class: SlotClass,
    *,
    address: str,
    quantity: int,
    currency: str,
    price: str,
    card: str,
) -> str:
    """A customer with an account signs in, holds capsules and pays with ``card``; returns
    the booking's reference, on whatever page the payment led to."""
    verified_customer(address)
    page.goto(url(live_server, "/"))
    sign_in(page, address)
    reference = hold_capsules(
        page, shot, slot_class, quantity=quantity, currency=currency, price=price
    )
    open_pay_page(page, price)
    pay_by_card(page, card, price)
    return reference


def assert_still_held_after_a_failed_attempt(page: Page, reference: str) -> None:
    """Back on the pay page, told that the capacity is still theirs, the card form ready
    for another try; the booking held, unpaid and unconfirmed."""
    expect(page.get_by_role("heading", name="Amount to pay")).to_be_visible()
    expect(page.locator(".message--error")).to_contain_text("Your booking is still held until")
    expect(page.locator("#card-form")).to_be_visible()
    expect(page.locator("#payment-action")).to_have_count(0)
    with quiet_site():
        booking = Booking.objects.get(reference=reference)
        assert booking.status == BookingStatus.HELD
        assert booking.hold_expires_at is not None
        assert booking.hold_expires_at > timezone.now()
        statuses = list(booking.payments.values_list("status", flat=True))
    assert statuses == [PaymentStatus.FAILED]
    assert confirmed_mails(reference) == []


# --- the journeys -------------------------------------------------------------------------


def test_a_new_customer_signs_up_books_a_capsule_pays_by_card_and_sees_it_confirmed(
    page: Page, live_server: Any, shot: Shot, capsules: SlotClass, page_problems: PageProblems
) -> None:
    address = "astrid@example.com"
    page.goto(url(live_server, "/"))
    expect(page.get_by_role("link", name="Create account")).to_be_visible()
    shot("home")

    switch_language(page, "日本語")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.get_by_role("link", name="ミッション").first).to_be_visible()
    shot("home-ja")
    switch_language(page, "English")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    sign_up(page, live_server, shot, address)
    with quiet_site():
        user = User.objects.get(email=address)
    assert user.preferred_language == "en"

    reference = hold_capsules(page, shot, capsules, quantity=3, currency="JPY", price="¥90,000")
    open_pay_page(page, "¥90,000")
    pay_by_card(page, VISA, "¥90,000", shot)

    wait_until_confirmed(page, reference)
    expect(page.locator(".messages")).to_contain_text("your payment of ¥90,000 went through")
    expect(page.locator("[data-payment-status]")).to_contain_text("Paid by card: ¥90,000")
    shot("confirmed")
    see_in_my_bookings(page, reference, "Confirmed")
    shot("my-bookings")

    # The sandbox's own word arrives by webhook after the page, and changes nothing.
    wait_for_webhooks("payment_intent.amount_capturable_updated", "payment_intent.succeeded")
    assert_paid_once(reference, address, amount=90_000, currency="JPY")
    with quiet_site():
        assert Payment.objects.filter(booking__reference=reference).count() == 1
    assert not page_problems, page_problems


def test_a_declined_card_keeps_the_hold_and_another_card_then_confirms_it(
    page: Page, live_server: Any, shot: Shot, capsules: SlotClass, page_problems: PageProblems
) -> None:
    reference = returning_customer_pays(
        page,
        live_server,
        shot,
        capsules,
        address="bruno@example.com",
        quantity=1,
        currency="USD",
        price="$200.00",
        card=DECLINED_AT_CHARGE,
    )
    expect(page.locator(".message--error")).to_contain_text("declined")
    assert_still_held_after_a_failed_attempt(page, reference)
    shot("declined")

    # The booking page says so too.
    page.get_by_role("link", name=reference).click()
    expect(page.locator(".badge")).to_have_text("Held")
    expect(page.locator("[data-payment-status]")).to_contain_text(
        "Your last payment attempt did not go through"
    )
    shot("held-after-decline")

    open_pay_page(page, "$200.00")
    pay_by_card(page, VISA, "$200.00")
    wait_until_confirmed(page, reference)
    shot("confirmed")
    see_in_my_bookings(page, reference, "Confirmed")

    wait_for_webhooks(
        "payment_intent.payment_failed",
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
    )
    assert_paid_once(reference, "bruno@example.com", amount=200_00, currency="USD")
    with quiet_site():
        attempts = Payment.objects.filter(booking__reference=reference).order_by("attempt")
        statuses = [attempt.status for attempt in attempts]
    assert statuses == [PaymentStatus.FAILED, PaymentStatus.SUCCEEDED]
    assert not page_problems, page_problems


def test_a_card_that_asks_for_3d_secure_confirms_once_the_customer_authenticates(
    page: Page, live_server: Any, shot: Shot, capsules: SlotClass, page_problems: PageProblems
) -> None:
    address = "chiyo@example.com"
    reference = returning_customer_pays(
        page,
        live_server,
        shot,
        capsules,
        address=address,
        quantity=2,
        currency="JPY",
        price="¥60,000",
        card=THREE_D_SECURE,
    )

    # The bank's step: the sandbox's Stripe.js opens its authentication dialog on the page.
    expect(page.locator("#payment-action")).to_contain_text("Your bank asks you to confirm")
    authenticate = page.get_by_role("button", name="Complete authentication")
    expect(authenticate).to_be_visible()
    shot("3d-secure")
    with quiet_site():
        attempts = Payment.objects.filter(booking__reference=reference)
        statuses = list(attempts.values_list("status", flat=True))
    assert statuses == [PaymentStatus.REQUIRES_ACTION]
    # Whatever the dialog's outcome, the page posts back and the server asks the sandbox.
    with page.expect_navigation():
        authenticate.click()

    wait_until_confirmed(page, reference)
    expect(page.locator(".messages")).to_contain_text("your payment of ¥60,000 went through")
    shot("confirmed")
    wait_for_webhooks("payment_intent.amount_capturable_updated", "payment_intent.succeeded")
    assert_paid_once(reference, address, amount=60_000, currency="JPY")
    assert not page_problems, page_problems


def test_a_failed_3d_secure_step_keeps_the_hold_and_brings_the_card_form_back(
    page: Page, live_server: Any, shot: Shot, capsules: SlotClass, page_problems: PageProblems
) -> None:
    reference = returning_customer_pays(
        page,
        live_server,
        shot,
        capsules,
        address="dara@example.com",
        quantity=1,
        currency="JPY",
        price="¥30,000",
        card=THREE_D_SECURE,
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Fail authentication").click()

    assert_still_held_after_a_failed_attempt(page, reference)
    shot("authentication-failed")
    assert not page_problems, page_problems


def test_a_card_declined_on_a_japanese_page_is_explained_in_japanese(
    page: Page, live_server: Any, shot: Shot, capsules: SlotClass
) -> None:
    verified_customer("eri@example.com")
    page.goto(url(live_server, "/"))
    sign_in(page, "eri@example.com")
    reference = hold_capsules(page, shot, capsules, quantity=1, currency="JPY", price="¥30,000")
    open_pay_page(page, "¥30,000")
    switch_language(page, "日本語")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    fill_card(page, DECLINED_AT_CHARGE)
    with page.expect_navigation():
        page.locator("[data-pay-button]").click()
    shot("declined-ja")
    flash = page.locator(".message--error").inner_text()
    page.goto(url(live_server, f"/bookings/{reference}/"))
    panel = page.locator("[data-payment-status]").inner_text()
    shot("booking-ja")

    assert "仮押さえ" in flash  # the page's own sentence is Japanese ...
    assert "declined" not in flash  # ... and so must be the reason it gives
    assert "declined" not in panel
