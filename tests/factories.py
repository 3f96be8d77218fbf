"""factory_boy factories shared by every test package."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from accounts.models import Membership, Organisation, OrganisationKind, User
from marketplace.models import (
    CancellationTier,
    LanderModel,
    LanderPosition,
    Mission,
    MissionStatus,
    Pricing,
    SlotClass,
    SlotClassPrice,
)


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    name = factory.Faker("name")
    password = factory.django.Password("correct-horse-battery")


class OrganisationFactory(factory.django.DjangoModelFactory[Organisation]):
    class Meta:
        model = Organisation

    name = factory.Sequence(lambda n: f"Organisation {n}")
    kind = OrganisationKind.CUSTOMER
    notification_email = factory.LazyAttribute(
        lambda o: f"ops{abs(hash(o.name)) % 10000}@example.com"
    )


class ResellerFactory(OrganisationFactory):
    name = factory.Sequence(lambda n: f"Reseller {n}")
    kind = OrganisationKind.RESELLER
    commission_bp = 800


class MembershipFactory(factory.django.DjangoModelFactory[Membership]):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organisation = factory.SubFactory(OrganisationFactory)


class LanderModelFactory(factory.django.DjangoModelFactory[LanderModel]):
    class Meta:
        model = LanderModel
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Lander {n}")
    manufacturer = "Lunar Lander Co."
    payload_capacity_g = 300_000


class LanderPositionFactory(factory.django.DjangoModelFactory[LanderPosition]):
    class Meta:
        model = LanderPosition

    lander = factory.SubFactory(LanderModelFactory)
    code = factory.Sequence(lambda n: f"pos-{n}")
    name = "Deck"
    max_length_mm = 500
    max_width_mm = 500
    max_height_mm = 500
    max_power_w = 50


class MissionFactory(factory.django.DjangoModelFactory[Mission]):
    class Meta:
        model = Mission

    code = factory.Sequence(lambda n: f"T{n}")
    name = factory.Sequence(lambda n: f"Test mission {n}")
    name_ja = factory.Sequence(lambda n: f"テストミッション{n}")
    lander = factory.SubFactory(LanderModelFactory)
    landing_site = "Far side"
    status = MissionStatus.ON_SALE
    launch_window_start = factory.LazyFunction(lambda: timezone.now() + timedelta(days=400))
    launch_window_end = factory.LazyAttribute(lambda m: m.launch_window_start + timedelta(days=30))
    booking_cutoff = factory.LazyAttribute(lambda m: m.launch_window_start - timedelta(days=90))


class SlotClassFactory(factory.django.DjangoModelFactory[SlotClass]):
    """A per-kg class by default; use ``SlotClassFactory.per_unit(...)`` for capsules."""

    class Meta:
        model = SlotClass
        skip_postgeneration_save = True

    mission = factory.SubFactory(MissionFactory)
    name = factory.Sequence(lambda n: f"Deck {n}")
    name_ja = "デッキ"
    pricing = Pricing.PER_KG
    capacity_g = 100_000
    min_mass_g = 500
    max_mass_g = 50_000
    mass_step_g = 100
    max_length_mm = 400
    max_width_mm = 400
    max_height_mm = 400
    max_power_w = 20

    @factory.post_generation
    def prices(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if not create:
            return
        amounts = extracted if extracted is not None else {"JPY": 180_000_000, "USD": 1_200_000_00}
        for currency, amount in amounts.items():
            SlotClassPrice.objects.create(slot_class=self, currency=currency, amount=amount)

    @factory.post_generation
    def tiers(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if not create:
            return
        tiers = extracted if extracted is not None else {365: 90, 180: 50, 0: 0}
        for days, percent in tiers.items():
            CancellationTier.objects.create(
                slot_class=self, days_before_launch=days, refund_percent=percent
            )

    @classmethod
    def per_unit(cls, **kwargs: Any) -> SlotClass:
        unit_mass_g = kwargs.pop("unit_mass_g", 10)
        capacity_units = kwargs.pop("capacity_units", 1000)
        min_quantity = kwargs.pop("min_quantity", 1)
        max_quantity = kwargs.pop("max_quantity", 10)
        kwargs.setdefault("prices", {"JPY": 30_000, "USD": 200_00})
        kwargs.setdefault("name", "Message capsule")
        kwargs.setdefault("inert_only", True)
        kwargs.setdefault("max_power_w", 0)
        kwargs.setdefault("max_length_mm", 30)
        kwargs.setdefault("max_width_mm", 30)
        kwargs.setdefault("max_height_mm", 10)
        return cls.create(
            pricing=Pricing.PER_UNIT,
            unit_mass_g=unit_mass_g,
            capacity_units=capacity_units,
            capacity_g=capacity_units * unit_mass_g,
            min_quantity=min_quantity,
            max_quantity=max_quantity,
            mass_step_g=unit_mass_g,
            min_mass_g=min_quantity * unit_mass_g,
            max_mass_g=max_quantity * unit_mass_g,
            **kwargs,
        )


__all__ = [
    "CancellationTier",
    "LanderModelFactory",
    "LanderPositionFactory",
    "MembershipFactory",
    "MissionFactory",
    "OrganisationFactory",
    "ResellerFactory",
    "SlotClassFactory",
    "UserFactory",
]
