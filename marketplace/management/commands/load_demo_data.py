"""Load a small, realistic catalogue and demo accounts. Safe to run again: rows are keyed by
their natural keys (lander name, position code, mission code, class name, currency, tier
days, e-mail), so a second run updates the same rows and adds none.

A mission's launch window is set only when the mission is created: afterwards the schedule
belongs to sales (and its history to ``mission_reschedule``), so a re-run leaves it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.mfa import demo_staff_totp_setup
from accounts.models import ApiKey, DeniedParty, Organisation, User
from accounts.services import api_key_issue, personal_organisation_create, reseller_get_or_create
from marketplace.exceptions import AllocationExceeded
from marketplace.models import (
    CancellationTier,
    Destination,
    DueKind,
    LanderModel,
    LanderPosition,
    Milestone,
    Mission,
    MissionStatus,
    PaymentPlan,
    PaymentPlanStep,
    Pricing,
    SlotClass,
    SlotClassPrice,
)
from marketplace.services import mission_check_allocations, mission_reschedule

# Demo-only credentials, printed at the end; never used outside a local demo database.
ADMIN_EMAIL = "admin@moonslot.example"
ADMIN_SECRET = "moonslot-admin-demo"  # noqa: S105
CUSTOMER_EMAIL = "customer@moonslot.example"
CUSTOMER_SECRET = "moonslot-customer-demo"  # noqa: S105
RESELLER_NAME = "Orbit Travel"
DEMO_KEY_NAME = "Demo key"

# Sales need time to sell: if the fixed calendar's first cutoff is closer than this, the
# whole calendar moves on by whole years.
MIN_SALES_LEAD = timedelta(days=90)

CANCELLATION_TIERS = {365: 90, 180: 50, 0: 0}

LANDERS: dict[str, dict[str, Any]] = {
    "Tsuki-300 mid-size lander": {
        "payload_capacity_g": 300_000,
        "description": "Mid-size lander: about 300 kg of customer payload, expandable to 500 kg.",
        # code: (name, length, width, height mm, power W, data kbps, min °C, max °C)
        "positions": {
            "deck": ("Top deck", 800, 800, 600, 120, 256, -20, 50),
            "side-mount": ("Side mount", 400, 400, 400, 40, 64, -30, 60),
            "rover-bay": ("Rover bay", 700, 500, 400, 150, 512, -20, 40),
            "orbit-release": ("Orbit release", 600, 400, 400, 20, 32, -30, 50),
            "capsule-bay": ("Capsule bay", 300, 300, 200, 0, 0, -40, 60),
        },
    },
    "Tsuki-100 small lander": {
        "payload_capacity_g": 100_000,
        "description": "Small lander: at least 100 kg of customer payload, growing to 500 kg.",
        "positions": {
            "deck": ("Top deck", 500, 500, 400, 60, 128, -20, 50),
            "capsule-bay": ("Capsule bay", 200, 200, 150, 0, 0, -40, 60),
        },
    },
}


@dataclass(frozen=True)
class ClassSpec:
    name: str
    name_ja: str
    position: str
    prices: dict[str, int]  # per kg, or per unit, in minor units
    capacity_g: int = 0
    min_mass_g: int = 0
    max_mass_g: int = 0
    mass_step_g: int = 100
    dimensions_mm: tuple[int, int, int] = (300, 300, 300)
    max_power_w: int = 0
    destination: str = Destination.LUNAR_SURFACE
    # Per-unit classes: (unit mass g, units, min units, max units)
    units: tuple[int, int, int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        length, width, height = self.dimensions_mm
        values: dict[str, Any] = {
            "name_ja": self.name_ja,
            "destination": self.destination,
            "max_length_mm": length,
            "max_width_mm": width,
            "max_height_mm": height,
            "max_power_w": self.max_power_w,
            **self.extra,
        }
        if self.units is None:
            return values | {
                "pricing": Pricing.PER_KG,
                "capacity_g": self.capacity_g,
                "min_mass_g": self.min_mass_g,
                "max_mass_g": self.max_mass_g,
                "mass_step_g": self.mass_step_g,
                "unit_mass_g": None,
                "capacity_units": None,
                "min_quantity": None,
                "max_quantity": None,
            }
        unit_mass_g, units, min_quantity, max_quantity = self.units
        # The figures SlotClass.clean derives (and its constraint insists on).
        return values | {
            "pricing": Pricing.PER_UNIT,
            "unit_mass_g": unit_mass_g,
            "capacity_units": units,
            "min_quantity": min_quantity,
            "max_quantity": max_quantity,
            "capacity_g": units * unit_mass_g,
            "mass_step_g": unit_mass_g,
            "min_mass_g": min_quantity * unit_mass_g,
            "max_mass_g": max_quantity * unit_mass_g,
        }


def _capsule(*, units: int) -> ClassSpec:
    return ClassSpec(
        name="Message capsule",
        name_ja="メッセージカプセル",
        position="capsule-bay",
        prices={"JPY": 30_000, "USD": 200_00},
        units=(1, units, 1, 10),
        dimensions_mm=(30, 30, 5),
        extra={
            "inert_only": True,
            "sold_on_web": True,
            "sold_on_api": True,
            "sold_on_admin": False,
            "hold_minutes_web": 20,
        },
    )


@dataclass(frozen=True)
class MissionSpec:
    code: str
    lander: str
    launch_window: tuple[datetime, datetime]  # on the fixed calendar, before any shift
    cutoff_before_launch: timedelta
    fields: dict[str, Any]
    classes: list[ClassSpec]
    # (years slipped, reason): the mission is created on its old window and rescheduled.
    slip: tuple[int, str] | None = None


MISSIONS = [
    MissionSpec(
        code="M3",
        lander="Tsuki-300 mid-size lander",
        launch_window=(datetime(2027, 9, 1, tzinfo=UTC), datetime(2027, 11, 30, tzinfo=UTC)),
        cutoff_before_launch=timedelta(days=150),
        slip=(
            1,
            "The launch provider's manifest moved and the lander's propulsion test campaign "
            "was extended: the launch slips by one year. Bookings carry over unchanged.",
        ),
        fields={
            "name": "Mission 3 — Far side",
            "name_ja": "ミッション3 — 月の裏側",
            "destination": Destination.LUNAR_SURFACE,
            "landing_site": "Schrödinger basin, lunar far side",
            "status": MissionStatus.ON_SALE,
            "description": (
                "A mid-size lander to the far side of the Moon, with payload on the deck, "
                "side mounts, a hosted rover and small satellites released into lunar orbit."
            ),
            "description_ja": (
                "月の裏側へ向かう中型ランダー。デッキ、サイドマウント、ローバー搭載、"
                "月周回軌道への小型衛星放出に対応します。"
            ),
        },
        classes=[
            ClassSpec(
                name="Lander deck",
                name_ja="ランダーデッキ",
                position="deck",
                prices={"JPY": 180_000_000, "USD": 1_200_000_00},
                capacity_g=140_000,
                min_mass_g=500,
                max_mass_g=50_000,
                dimensions_mm=(600, 600, 500),
                max_power_w=100,
            ),
            ClassSpec(
                name="Side mount",
                name_ja="サイドマウント",
                position="side-mount",
                prices={"JPY": 165_000_000, "USD": 1_100_000_00},
                capacity_g=30_000,
                min_mass_g=500,
                max_mass_g=10_000,
                dimensions_mm=(350, 350, 350),
                max_power_w=30,
            ),
            ClassSpec(
                name="Rover-hosted",
                name_ja="ローバー搭載",
                position="rover-bay",
                prices={"JPY": 210_000_000, "USD": 1_400_000_00},
                capacity_g=30_000,
                min_mass_g=100,
                max_mass_g=5_000,
                dimensions_mm=(200, 150, 100),
                max_power_w=10,
            ),
            ClassSpec(
                name="Orbit release",
                name_ja="月周回軌道投入",
                position="orbit-release",
                destination=Destination.LUNAR_ORBIT,
                prices={"JPY": 120_000_000, "USD": 800_000_00},
                capacity_g=80_000,
                min_mass_g=1_000,
                max_mass_g=25_000,
                dimensions_mm=(370, 230, 230),
                max_power_w=20,
            ),
            _capsule(units=5_000),
        ],
    ),
    MissionSpec(
        code="M4",
        lander="Tsuki-100 small lander",
        launch_window=(datetime(2028, 6, 1, tzinfo=UTC), datetime(2028, 8, 31, tzinfo=UTC)),
        cutoff_before_launch=timedelta(days=180),
        fields={
            "name": "Mission 4 — Near side",
            "name_ja": "ミッション4 — 月の表側",
            "destination": Destination.LUNAR_SURFACE,
            "landing_site": "Mare Frigoris, lunar near side",
            "status": MissionStatus.ON_SALE,
            "description": "A small lander to the near side, with deck payload and capsules.",
            "description_ja": "月の表側へ向かう小型ランダー。デッキ搭載とカプセルに対応します。",
        },
        classes=[
            ClassSpec(
                name="Lander deck",
                name_ja="ランダーデッキ",
                position="deck",
                prices={"JPY": 190_000_000, "USD": 1_260_000_00},
                capacity_g=80_000,
                min_mass_g=500,
                max_mass_g=30_000,
                dimensions_mm=(450, 450, 350),
                max_power_w=50,
            ),
            _capsule(units=2_000),
        ],
    ),
]


def calendar_shift_years(now: datetime) -> int:
    """Whole years to move the fixed calendar so the first cutoff is still ahead of ``now``
    by ``MIN_SALES_LEAD`` (0 while the 2027/2028 dates are still sellable)."""
    first = MISSIONS[0]
    years = 0
    while _shift(first.launch_window[0], years) - first.cutoff_before_launch < now + MIN_SALES_LEAD:
        years += 1
    return years


def _shift(moment: datetime, years: int) -> datetime:
    return moment.replace(year=moment.year + years)


DEMO_PLAN_NAME = "Deposit 20% + 3 milestones"
# (label, share %, falls due, days, milestone): with the 20% deposit, 100%.
DEMO_PLAN_STEPS: list[tuple[str, int, str, int | None, str]] = [
    ("Build start", 30, DueKind.BEFORE_LAUNCH, 365, ""),
    ("Payload delivery", 30, DueKind.MILESTONE, None, Milestone.PAYLOAD_ACCEPTED),
    ("Launch", 20, DueKind.BEFORE_LAUNCH, 30, ""),
]
DEMO_DENIED_PARTIES = [
    ("Example Embargoed Aerospace", "", "Demo list (fictitious)"),
    ("Sanctioned Orbital Trading", "RU", "Demo list (fictitious)"),
]


class Command(BaseCommand):
    help = "Load demo landers, missions M3 and M4, and demo accounts. Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        lines: list[str] = []
        with transaction.atomic():
            years = calendar_shift_years(timezone.now())
            landers = {name: self._lander(name, spec) for name, spec in LANDERS.items()}
            for spec in MISSIONS:
                mission = self._mission(spec, landers[spec.lander], years)
                lines.append(
                    f"Mission {mission.code}: launch window {mission.launch_window_start:%Y-%m-%d}"
                    f" – {mission.launch_window_end:%Y-%m-%d}, booking cutoff "
                    f"{mission.booking_cutoff:%Y-%m-%d}, {mission.slot_classes.count()} classes"
                )
            lines.extend(self._accounts())
            for name, country, source in DEMO_DENIED_PARTIES:
                DeniedParty.objects.get_or_create(
                    name=name, country=country, defaults={"source": source}
                )
        self.stdout.write("Demo data loaded.")
        for line in lines:
            self.stdout.write(line)

    # --- catalogue --------------------------------------------------------------------
    def _lander(self, name: str, spec: dict[str, Any]) -> LanderModel:
        lander, _ = LanderModel.objects.update_or_create(
            name=name,
            defaults={
                "manufacturer": "Lunar Lander Co.",
                "payload_capacity_g": spec["payload_capacity_g"],
                "description": spec["description"],
            },
        )
        for code, figures in spec["positions"].items():
            label, length, width, height, power, data, min_c, max_c = figures
            LanderPosition.objects.update_or_create(
                lander=lander,
                code=code,
                defaults={
                    "name": label,
                    "max_length_mm": length,
                    "max_width_mm": width,
                    "max_height_mm": height,
                    "max_power_w": power,
                    "max_data_kbps": data,
                    "min_temperature_c": min_c,
                    "max_temperature_c": max_c,
                },
            )
        return lander

    def _mission(self, spec: MissionSpec, lander: LanderModel, years: int) -> Mission:
        start, end = (_shift(moment, years) for moment in spec.launch_window)
        cutoff = start - spec.cutoff_before_launch
        slipped_years = spec.slip[0] if spec.slip else 0
        # A slipped mission is first created on the window it was announced with.
        first_start, first_end = (_shift(moment, -slipped_years) for moment in (start, end))
        mission, created = Mission.objects.update_or_create(
            code=spec.code,
            defaults={"lander": lander, **spec.fields},
            create_defaults={
                "lander": lander,
                **spec.fields,
                "launch_window_start": first_start,
                "launch_window_end": first_end,
                "booking_cutoff": first_start - spec.cutoff_before_launch,
            },
        )
        plan = self._payment_plan()
        for sort_order, class_spec in enumerate(spec.classes):
            slot_class = self._slot_class(mission, class_spec, sort_order)
            # Kilograms are paid in milestones; capsules in full by card.
            wanted = None if slot_class.is_per_unit else plan
            if slot_class.payment_plan_id != (wanted.pk if wanted else None):
                SlotClass.objects.filter(pk=slot_class.pk).update(payment_plan=wanted)
        try:
            mission_check_allocations(mission_id=mission.pk)
        except AllocationExceeded as exc:
            raise CommandError(f"Demo data for {spec.code} does not fit its lander: {exc}") from exc
        if created and spec.slip:
            mission_reschedule(
                mission_id=mission.pk,
                new_window_start=start,
                new_window_end=end,
                new_booking_cutoff=cutoff,
                reason=spec.slip[1],
            )
            mission.refresh_from_db()
        return mission

    @staticmethod
    def _payment_plan() -> PaymentPlan:
        """The milestone plan of the kilogram classes (DOMAIN.md): a deposit to reserve, then
        instalments at build start, payload delivery (acceptance) and launch."""
        plan, _ = PaymentPlan.objects.update_or_create(
            name=DEMO_PLAN_NAME,
            defaults={"deposit_percent": 20, "reminder_days": 14, "grace_days": 14},
        )
        for position, (label, percent, due_kind, days, milestone) in enumerate(
            DEMO_PLAN_STEPS, start=1
        ):
            PaymentPlanStep.objects.update_or_create(
                plan=plan,
                position=position,
                defaults={
                    "label": label,
                    "percent": percent,
                    "due_kind": due_kind,
                    "days": days,
                    "milestone": milestone,
                },
            )
        return plan

    def _slot_class(self, mission: Mission, spec: ClassSpec, sort_order: int) -> SlotClass:
        position = LanderPosition.objects.get(lander_id=mission.lander_id, code=spec.position)
        slot_class, _ = SlotClass.objects.update_or_create(
            mission=mission,
            name=spec.name,
            defaults={**spec.fields(), "position": position, "sort_order": sort_order},
        )
        for currency, amount in spec.prices.items():
            SlotClassPrice.objects.update_or_create(
                slot_class=slot_class, currency=currency, defaults={"amount": amount}
            )
        for days, percent in CANCELLATION_TIERS.items():
            CancellationTier.objects.update_or_create(
                slot_class=slot_class,
                days_before_launch=days,
                defaults={"refund_percent": percent},
            )
        return slot_class

    # --- accounts ---------------------------------------------------------------------
    def _accounts(self) -> list[str]:
        lines = ["", "Demo credentials"]
        admin, created = self._user(ADMIN_EMAIL, ADMIN_SECRET, name="Demo Admin", staff=True)
        lines.append(self._credentials("Admin (/admin/)", admin, ADMIN_SECRET, created))
        # Staff need a second factor before the admin opens; the demo's is a known secret.
        lines.append(demo_staff_totp_setup(admin))
        lines.append("    Current code: .venv/bin/python manage.py demo_totp_code")
        customer, created = self._user(CUSTOMER_EMAIL, CUSTOMER_SECRET, name="Demo Customer")
        personal_organisation_create(user=customer)
        lines.append(self._credentials("Customer (web)", customer, CUSTOMER_SECRET, created))
        lines.extend(self._reseller())
        return lines

    @staticmethod
    def _user(email: str, secret: str, *, name: str, staff: bool = False) -> tuple[User, bool]:
        user = User.objects.filter(email=email).first()
        created = user is None
        if user is None:
            if staff:
                user = User.objects.create_superuser(email, secret, name=name)
            else:
                user = User.objects.create_user(email, secret, name=name)
        # allauth requires a verified address before a password login.
        EmailAddress.objects.get_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        return user, created

    @staticmethod
    def _credentials(role: str, user: User, secret: str, created: bool) -> str:
        note = "" if created else " (existing user: password left as it was)"
        return f"  {role}: {user.email} / {secret}{note}"

    def _reseller(self) -> list[str]:
        try:
            reseller, _ = reseller_get_or_create(name=RESELLER_NAME)
        except ValueError as exc:
            raise CommandError(f"Cannot set up the demo reseller: {exc}") from exc
        Organisation.objects.filter(pk=reseller.pk).update(
            country="JP", notification_email="ops@orbit-travel.example", commission_bp=1000
        )
        existing = ApiKey.objects.filter(
            organisation=reseller, name=DEMO_KEY_NAME, revoked_at__isnull=True
        ).first()
        lines = [f"  Reseller: {RESELLER_NAME} (10% commission, no credit limit, no hold cap)"]
        if existing is None:
            issued = api_key_issue(organisation=reseller, name=DEMO_KEY_NAME)
            lines.append("  Reseller API key (shown once, copy it now):")
            lines.append(f"    {issued.raw_key}")
        else:
            lines.append(
                f"  Reseller API key: an active demo key exists (prefix {existing.prefix}); a "
                "key cannot be shown again. Issue another with:"
            )
            lines.append(
                f'    python manage.py issue_api_key --reseller "{RESELLER_NAME}" --name "demo 2"'
            )
        return lines
