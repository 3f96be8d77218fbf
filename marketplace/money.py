"""Money and mass arithmetic. Integers only: minor units for money, grams for mass."""

from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _

# ISO 4217 currencies Stripe treats as zero-decimal: the amount is in the major unit.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)

# Stripe caps one charge at eight digits of the minor unit.
STRIPE_MAX_CHARGE_MINOR = 99_999_999


class Currency(models.TextChoices):
    JPY = "JPY", _("Japanese yen")
    USD = "USD", _("US dollar")


def minor_unit_exponent(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2


def divide_half_up(numerator: int, denominator: int) -> int:
    """Integer division rounded half up (away from zero for the positive values we price)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    if numerator < 0:
        return -divide_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("Money.amount must be an int of minor units")

    def as_dict(self) -> dict[str, int | str]:
        return {"amount": self.amount, "currency": self.currency}

    def format(self) -> str:
        exponent = minor_unit_exponent(self.currency)
        symbol = {"JPY": "¥", "USD": "$"}.get(self.currency, "")
        if exponent == 0:
            text = f"{self.amount:,}"
        else:
            major, minor = divmod(abs(self.amount), 10**exponent)
            text = f"{major:,}.{minor:0{exponent}d}"
            if self.amount < 0:
                text = "-" + text
        return f"{symbol}{text}" if symbol else f"{text} {self.currency}"

    def __str__(self) -> str:
        return self.format()


def format_mass(mass_g: int) -> str:
    """Grams as a person reads them: 250 g, 2.5 kg, 1,000 kg."""
    if mass_g < 1000:
        return f"{mass_g:,} g"
    kg, rest = divmod(mass_g, 1000)
    if rest == 0:
        return f"{kg:,} kg"
    return f"{kg:,}.{rest:03d}".rstrip("0") + " kg"
