"""Property tests of the money, quote and capacity arithmetic, each against an independent
model written here: Python's ``Decimal`` for rounding, plain parsing for the formats, and the
test's own record of every booking for the capacity."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Organisation
from bookings import services
from bookings.exceptions import InsufficientCapacity
from bookings.gateways import stripe_amount
from bookings.models import Booking
from bookings.services import Actor
from marketplace.models import SlotClass, SlotClassPrice
from marketplace.money import (
    ZERO_DECIMAL_CURRENCIES,
    Money,
    divide_half_up,
    format_mass,
    minor_unit_exponent,
)
from tests.factories import ResellerFactory, SlotClassFactory

# Far beyond any real price × mass (a tonne at a million dollars a kilo is 1e14 cents × 1e6 g).
HUGE = 10**24
DB_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def decimal_half_up(numerator: int, denominator: int) -> int:
    """The reference: exact decimal division, rounded half away from zero."""
    with localcontext() as context:
        context.prec = 80
        quotient = Decimal(numerator) / Decimal(denominator)
        return int(quotient.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- divide_half_up ---------------------------------------------------------------------


@given(st.integers(-HUGE, HUGE), st.integers(1, 10**12))
def test_divide_half_up_agrees_with_decimal_round_half_up(numerator: int, denominator: int) -> None:
    assert divide_half_up(numerator, denominator) == decimal_half_up(numerator, denominator)


@given(st.integers(0, 10**15), st.integers(1, 10**6))
def test_exact_halves_round_up(whole: int, denominator: int) -> None:
    # numerator / (2·denominator) lands on exactly whole + ½ when the numerator is odd·d.
    numerator = (2 * whole + 1) * denominator
    assert divide_half_up(numerator, 2 * denominator) == whole + 1


@given(st.integers(-HUGE, HUGE), st.integers(-(10**6), 0))
def test_divide_half_up_refuses_a_denominator_that_is_not_positive(
    numerator: int, denominator: int
) -> None:
    with pytest.raises(ValueError, match="positive"):
        divide_half_up(numerator, denominator)


# --- quotes -----------------------------------------------------------------------------


@pytest.fixture
def per_kg() -> SlotClass:
    return SlotClassFactory.create(prices={"JPY": 1, "USD": 1}, capacity_g=10_000_000)


@pytest.fixture
def per_unit() -> SlotClass:
    return SlotClassFactory.per_unit(prices={"JPY": 1, "USD": 1})


def _priced(slot_class: SlotClass, currency: str, amount: int) -> SlotClass:
    SlotClassPrice.objects.filter(slot_class=slot_class, currency=currency).update(amount=amount)
    return SlotClass.objects.prefetch_related("prices").get(pk=slot_class.pk)


@pytest.mark.django_db
@DB_SETTINGS
@given(
    currency=st.sampled_from(["JPY", "USD"]),
    price_per_kg=st.integers(1, 10**12),
    mass_g=st.integers(1, 10_000_000),
)
def test_per_kg_price_is_price_times_mass_over_1000_rounded_half_up(
    per_kg: SlotClass, currency: str, price_per_kg: int, mass_g: int
) -> None:
    slot_class = _priced(per_kg, currency, price_per_kg)
    total = slot_class.total_price(currency=currency, mass_g=mass_g)
    assert total == Money(decimal_half_up(price_per_kg * mass_g, 1000), currency)
    # Never more than half a minor unit away from the exact price.
    assert abs(Decimal(total.amount) - Decimal(price_per_kg * mass_g) / 1000) <= Decimal("0.5")


@pytest.mark.django_db
@DB_SETTINGS
@given(
    currency=st.sampled_from(["JPY", "USD"]),
    unit_price=st.integers(1, 10**12),
    quantity=st.integers(1, 10_000),
)
def test_per_unit_price_is_unit_price_times_quantity_exactly(
    per_unit: SlotClass, currency: str, unit_price: int, quantity: int
) -> None:
    slot_class = _priced(per_unit, currency, unit_price)
    total = slot_class.total_price(
        currency=currency, mass_g=quantity * (slot_class.unit_mass_g or 0), quantity=quantity
    )
    assert total == Money(unit_price * quantity, currency)


@pytest.mark.django_db
@DB_SETTINGS
@given(yen_per_kg=st.integers(1, 10**10), kilograms=st.integers(1, 10_000))
def test_yen_prices_are_whole_yen_with_no_minor_unit(
    per_kg: SlotClass, yen_per_kg: int, kilograms: int
) -> None:
    slot_class = _priced(per_kg, "JPY", yen_per_kg)
    total = slot_class.total_price(currency="JPY", mass_g=kilograms * 1000)
    # Whole kilograms of a yen price are exact: the amount is yen, never hundredths of one.
    assert total.amount == yen_per_kg * kilograms
    assert total.format() == f"¥{yen_per_kg * kilograms:,}"
    assert "." not in total.format()
    # Stripe counts JPY in yen too: what we store is what a card is charged.
    if total.amount <= 99_999_999:
        assert stripe_amount(total.amount, "JPY") == total.amount


@given(st.sampled_from(sorted(ZERO_DECIMAL_CURRENCIES)), st.booleans())
def test_zero_decimal_currencies_have_no_minor_unit_in_any_case(currency: str, lower: bool) -> None:
    assert minor_unit_exponent(currency.lower() if lower else currency) == 0


@given(st.from_regex(r"\A[A-Z]{3}\Z").filter(lambda code: code not in ZERO_DECIMAL_CURRENCIES))
def test_other_currencies_count_hundredths(currency: str) -> None:
    assert minor_unit_exponent(currency) == 2


# --- Money.format -----------------------------------------------------------------------

GROUPED = re.compile(r"\A-?\d{1,3}(,\d{3})*(\.\d+)?\Z")


def _parse_formatted(text: str, currency: str) -> Decimal:
    symbol = {"JPY": "¥", "USD": "$"}.get(currency)
    if symbol is not None:
        assert text.startswith(symbol), text
        number = text[len(symbol) :]
    else:
        assert text.endswith(f" {currency}"), text
        number = text[: -len(currency) - 1]
    assert GROUPED.match(number), f"badly grouped: {text!r}"
    return Decimal(number.replace(",", ""))


@given(
    amount=st.integers(-(10**15), 10**15),
    currency=st.sampled_from(["JPY", "USD", "EUR", "KRW", "GBP"]),
)
def test_money_format_reads_back_as_the_same_amount(amount: int, currency: str) -> None:
    text = Money(amount, currency).format()
    exponent = minor_unit_exponent(currency)
    value = _parse_formatted(text, currency)
    assert value * 10**exponent == amount
    decimals = text.rsplit(".", 1)[1].split(" ")[0] if "." in text else ""
    assert len(decimals) == exponent  # cents always two digits; yen never any
    assert str(Money(amount, currency)) == text


@given(st.floats(allow_nan=False) | st.decimals(allow_nan=False) | st.booleans())
def test_money_refuses_anything_but_an_integer_amount(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]


# --- format_mass ------------------------------------------------------------------------

MASS = re.compile(r"\A(?P<number>\d{1,3}(,\d{3})*(\.\d+)?) (?P<unit>g|kg)\Z")


@given(st.integers(0, 10**12))
def test_format_mass_reads_back_as_the_same_grams(mass_g: int) -> None:
    text = format_mass(mass_g)
    match = MASS.match(text)
    assert match is not None, text
    number = Decimal(match["number"].replace(",", ""))
    grams = number if match["unit"] == "g" else number * 1000
    assert grams == mass_g
    # Grams below a kilogram, kilograms from one up, and no trailing zeros after the point.
    assert (match["unit"] == "g") == (mass_g < 1000)
    assert match["unit"] == "g" or "." not in match["number"] or not match["number"].endswith("0")


# --- capacity ---------------------------------------------------------------------------

LIVE_MINUTES = 600
LAPSING_MINUTES = 30
START_AGO = timedelta(hours=2)  # holds placed then for 30 minutes have lapsed by now


@dataclass
class Planned:
    amount: int  # grams (per-kg) or units (per-unit)
    fate: str  # "live", "lapsed", "confirmed", "cancelled"


PLANS = st.lists(
    st.builds(
        Planned,
        amount=st.integers(1, 50),
        fate=st.sampled_from(["live", "lapsed", "confirmed", "cancelled"]),
    ),
    max_size=14,
)


@dataclass
class Booked:
    """The test's own record: what is booked (live holds and confirmed bookings) and what
    lapsed without a sweep (free to the eye, still in the counter)."""

    grams: int = 0
    units: int = 0
    lapsed_g: int = 0


def _run_plans(slot_class: SlotClass, organisation: Organisation, plans: list[Planned]) -> Booked:
    """Place the planned bookings two hours ago, confirm or cancel them then, and keep an
    own record of the outcome. No sweep runs."""
    start = timezone.now() - START_AGO
    actor = Actor.system("property-test")
    per_unit = slot_class.is_per_unit
    unit_g = slot_class.unit_mass_g or 0
    capacity_g = slot_class.capacity_g
    taken_at_start = 0  # every earlier hold is still live at ``start``
    booked = Booked()
    for plan in plans:
        mass_g = plan.amount * unit_g if per_unit else plan.amount * 1000

        def place(plan: Planned = plan, mass_g: int = mass_g) -> Booking:
            return services.booking_hold(
                slot_class_id=slot_class.pk,
                organisation=organisation,
                channel="api",
                actor=actor,
                currency="JPY",
                mass_g=None if per_unit else mass_g,
                quantity=plan.amount if per_unit else None,
                hold_minutes=LAPSING_MINUTES if plan.fate == "lapsed" else LIVE_MINUTES,
                now=start,
            )

        if taken_at_start + mass_g > capacity_g:
            with pytest.raises(InsufficientCapacity):
                place()
            continue
        booking = place()
        taken_at_start += mass_g
        if plan.fate == "confirmed":
            services.booking_confirm(booking_id=booking.pk, actor=actor, now=start)
        elif plan.fate == "cancelled":
            services.booking_cancel(booking_id=booking.pk, actor=actor, now=start)
            taken_at_start -= mass_g
        if plan.fate in ("live", "confirmed"):
            booked.grams += mass_g
            booked.units += plan.amount if per_unit else 0
        elif plan.fate == "lapsed":
            booked.lapsed_g += mass_g
    return booked


def _new_class(pricing: str) -> SlotClass:
    if pricing == "per_unit":
        return SlotClassFactory.per_unit(
            unit_mass_g=20, capacity_units=120, min_quantity=1, max_quantity=50
        )
    return SlotClassFactory.create(
        capacity_g=200_000, min_mass_g=1000, max_mass_g=50_000, mass_step_g=1000
    )


@pytest.mark.django_db
@pytest.mark.parametrize("pricing", ["per_kg", "per_unit"])
@DB_SETTINGS
@given(plans=PLANS)
def test_available_capacity_is_capacity_less_live_holds_and_confirmed_bookings(
    pricing: str, plans: list[Planned]
) -> None:
    slot_class = _new_class(pricing)
    booked = _run_plans(slot_class, ResellerFactory.create(), plans)
    stored = SlotClass.objects.get(pk=slot_class.pk)
    annotated = SlotClass.objects.with_availability(timezone.now()).get(pk=slot_class.pk)
    # The counter still holds the lapsed holds (no sweep ran); reads must not.
    assert stored.taken_g == booked.grams + booked.lapsed_g
    for read in (stored, annotated):  # the model's own query, and the catalogue's annotation
        assert read.available_g == read.capacity_g - read.taken_g + booked.lapsed_g
        assert read.available_g == slot_class.capacity_g - booked.grams
        if pricing == "per_unit":
            assert read.available_units == 120 - booked.units
