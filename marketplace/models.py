"""The catalogue: lander models, missions, their schedule history and the slot classes sold.

Single-row invariants live in CheckConstraints; sums across rows (class allocations within a
lander's capacity) are checked by ``marketplace.services`` under the mission's row lock.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Mod, NullIf
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from marketplace.money import Currency, Money, divide_half_up, format_mass
from marketplace.querysets import MissionQuerySet, SlotClassQuerySet


class Destination(models.TextChoices):
    LUNAR_SURFACE = "lunar_surface", _("Lunar surface")
    LUNAR_ORBIT = "lunar_orbit", _("Lunar orbit")


class Pricing(models.TextChoices):
    PER_KG = "per_kg", _("Per kilogram")
    PER_UNIT = "per_unit", _("Per unit")


class Channel(models.TextChoices):
    WEB = "web", _("Web")
    API = "api", _("Reseller API")
    ADMIN = "admin", _("Sales (admin)")


class MissionStatus(models.TextChoices):
    PLANNED = "planned", _("Planned")
    ON_SALE = "on_sale", _("On sale")
    SALES_CLOSED = "sales_closed", _("Sales closed")
    INTEGRATION = "integration", _("Integration")
    LAUNCHED = "launched", _("Launched")
    LANDED = "landed", _("Landed")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


FINISHED_MISSION_STATUSES = (MissionStatus.COMPLETED, MissionStatus.FAILED)

# Where a mission may go next. Sales reopen (sales_closed → on_sale) when a slip moves the
# cutoff; a mission can fail from any point after launch.
MISSION_TRANSITIONS: dict[str, set[str]] = {
    MissionStatus.PLANNED: {MissionStatus.ON_SALE},
    MissionStatus.ON_SALE: {MissionStatus.SALES_CLOSED, MissionStatus.PLANNED},
    MissionStatus.SALES_CLOSED: {MissionStatus.ON_SALE, MissionStatus.INTEGRATION},
    MissionStatus.INTEGRATION: {MissionStatus.LAUNCHED},
    MissionStatus.LAUNCHED: {MissionStatus.LANDED, MissionStatus.FAILED},
    MissionStatus.LANDED: {MissionStatus.COMPLETED, MissionStatus.FAILED},
    MissionStatus.COMPLETED: set(),
    MissionStatus.FAILED: set(),
}


class TaxTreatment(models.TextChoices):
    """Japanese consumption tax on a slot class. Prices include the tax; an invoice shows the
    taxable total and the tax per rate (the qualified-invoice rules)."""

    STANDARD = "standard", _("Consumption tax, standard rate (10%)")
    REDUCED = "reduced", _("Consumption tax, reduced rate (8%)")
    ZERO_RATED = "zero_rated", _("Export or international service: zero-rated (0%)")
    EXEMPT = "exempt", _("Not subject to consumption tax")


# The rate in percent of each treatment; None: outside the tax (no tax line at all).
TAX_RATE_PERCENT: dict[str, int | None] = {
    TaxTreatment.STANDARD: 10,
    TaxTreatment.REDUCED: 8,
    TaxTreatment.ZERO_RATED: 0,
    TaxTreatment.EXEMPT: None,
}


class DueKind(models.TextChoices):
    BEFORE_LAUNCH = "before_launch", _("Days before the launch window opens")
    AFTER_BOOKING = "after_booking", _("Days after the booking is confirmed")
    MILESTONE = "milestone", _("When a milestone is reached")


class Milestone(models.TextChoices):
    PAYLOAD_ACCEPTED = "payload_accepted", _("Payload accepted by review")
    PAYLOAD_INTEGRATED = "payload_integrated", _("Payload integrated on the lander")


class PaymentPlan(models.Model):
    """Pay in full, or a deposit (a share of the price, due when the hold is confirmed) and
    instalments (``PaymentPlanStep``) whose shares with the deposit's make 100%."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    deposit_percent = models.PositiveSmallIntegerField(
        _("deposit (%)"), validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    reminder_days = models.PositiveSmallIntegerField(
        _("reminder (days before due)"),
        default=14,
        help_text=_("The customer is reminded this many days before an instalment falls due."),
    )
    grace_days = models.PositiveSmallIntegerField(
        _("grace period (days)"),
        default=14,
        help_text=_("An instalment unpaid this long after its due date flags the booking."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("payment plan")
        constraints = [
            models.CheckConstraint(
                condition=Q(deposit_percent__gte=1, deposit_percent__lte=100),
                name="plan_deposit_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PaymentPlanStep(models.Model):
    """One instalment after the deposit: its share and when it falls due."""

    plan = models.ForeignKey(PaymentPlan, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(_("position"))
    label = models.CharField(_("label"), max_length=100)
    percent = models.PositiveSmallIntegerField(
        _("share (%)"), validators=[MinValueValidator(1), MaxValueValidator(99)]
    )
    due_kind = models.CharField(_("falls due"), max_length=16, choices=DueKind.choices)
    days = models.PositiveIntegerField(_("days"), null=True, blank=True)
    milestone = models.CharField(
        _("milestone"), max_length=20, choices=Milestone.choices, blank=True
    )

    class Meta:
        ordering = ["plan", "position"]
        verbose_name = _("instalment")
        constraints = [
            models.UniqueConstraint(fields=["plan", "position"], name="plan_step_position_unique"),
            models.CheckConstraint(
                condition=Q(percent__gte=1, percent__lte=99), name="plan_step_percent_range"
            ),
            models.CheckConstraint(
                condition=Q(due_kind__in=DueKind.values), name="plan_step_due_kind_valid"
            ),
            models.CheckConstraint(
                condition=(Q(due_kind="milestone") & ~Q(milestone="") & Q(days__isnull=True))
                | (~Q(due_kind="milestone") & Q(milestone="") & Q(days__isnull=False)),
                name="plan_step_due_rule_complete",
                violation_error_message=_(
                    "A milestone instalment names its milestone; the others give a number of days."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan} · {self.label} ({self.percent}%)"


class LocalisedNameMixin:
    """Content names in English with an optional Japanese form, picked by the active language."""

    name: str
    name_ja: str

    @property
    def display_name(self) -> str:
        language = get_language() or "en"
        if language.startswith("ja") and self.name_ja:
            return self.name_ja
        return self.name


class LanderModel(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    manufacturer = models.CharField(_("manufacturer"), max_length=100, blank=True)
    payload_capacity_g = models.PositiveIntegerField(
        _("payload capacity (g)"),
        help_text=_("Customer payload the lander carries, in grams. Slot classes share it."),
    )
    description = models.TextField(_("description"), blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("lander model")
        constraints = [
            models.CheckConstraint(
                condition=Q(payload_capacity_g__gt=0), name="lander_capacity_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class LanderPosition(models.Model):
    """A place on (or released from) the lander, with its physical limits as data."""

    lander = models.ForeignKey(LanderModel, on_delete=models.CASCADE, related_name="positions")
    code = models.SlugField(_("code"), max_length=40)
    name = models.CharField(_("name"), max_length=100)
    max_length_mm = models.PositiveIntegerField(_("max length (mm)"))
    max_width_mm = models.PositiveIntegerField(_("max width (mm)"))
    max_height_mm = models.PositiveIntegerField(_("max height (mm)"))
    max_power_w = models.PositiveIntegerField(_("max power (W)"), default=0)
    max_data_kbps = models.PositiveIntegerField(_("max data rate (kbps)"), default=0)
    min_temperature_c = models.IntegerField(_("min temperature (°C)"), default=-40)
    max_temperature_c = models.IntegerField(_("max temperature (°C)"), default=60)

    class Meta:
        ordering = ["lander", "code"]
        verbose_name = _("lander position")
        constraints = [
            models.UniqueConstraint(fields=["lander", "code"], name="lander_position_code_unique"),
            models.CheckConstraint(
                condition=Q(max_length_mm__gt=0, max_width_mm__gt=0, max_height_mm__gt=0),
                name="lander_position_envelope_positive",
            ),
            models.CheckConstraint(
                condition=Q(min_temperature_c__lte=F("max_temperature_c")),
                name="lander_position_thermal_range_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lander} · {self.name}"


code_validator = RegexValidator(
    r"^[A-Z0-9][A-Z0-9-]{0,15}$",
    _("Use 1–16 capital letters, digits or hyphens, e.g. M3."),
)


class Mission(LocalisedNameMixin, models.Model):
    code = models.CharField(_("code"), max_length=16, unique=True, validators=[code_validator])
    name = models.CharField(_("name"), max_length=150)
    name_ja = models.CharField(_("name (Japanese)"), max_length=150, blank=True)
    lander = models.ForeignKey(
        LanderModel, on_delete=models.PROTECT, related_name="missions", verbose_name=_("lander")
    )
    destination = models.CharField(
        _("destination"),
        max_length=20,
        choices=Destination.choices,
        default=Destination.LUNAR_SURFACE,
    )
    landing_site = models.CharField(_("landing site"), max_length=150, null=True, blank=True)
    launch_window_start = models.DateTimeField(_("launch window start"))
    launch_window_end = models.DateTimeField(_("launch window end"))
    booking_cutoff = models.DateTimeField(
        _("booking cutoff"), help_text=_("Sales close and the manifest freezes at this time.")
    )
    status = models.CharField(
        _("status"), max_length=20, choices=MissionStatus.choices, default=MissionStatus.PLANNED
    )
    description = models.TextField(_("description"), blank=True)
    description_ja = models.TextField(_("description (Japanese)"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MissionQuerySet.as_manager()

    class Meta:
        ordering = ["launch_window_start", "code"]
        verbose_name = _("mission")
        constraints = [
            models.CheckConstraint(
                condition=Q(launch_window_start__lte=F("launch_window_end")),
                name="mission_window_ordered",
                violation_error_message=_("The launch window must start before it ends."),
            ),
            models.CheckConstraint(
                condition=Q(booking_cutoff__lte=F("launch_window_start")),
                name="mission_cutoff_before_launch",
                violation_error_message=_(
                    "The booking cutoff must be on or before the start of the launch window."
                ),
            ),
            models.CheckConstraint(
                condition=Q(status__in=MissionStatus.values), name="mission_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(destination__in=Destination.values), name="mission_destination_valid"
            ),
        ]
        indexes = [models.Index(fields=["status", "launch_window_start"])]
        # Moving a mission through its life (on sale, launched, failed…) is operations' call,
        # apart from editing its details.
        permissions = [("change_mission_status", "Can change a mission's status")]

    def __str__(self) -> str:
        return f"{self.code} — {self.name}"

    @property
    def display_description(self) -> str:
        language = get_language() or "en"
        if language.startswith("ja") and self.description_ja:
            return self.description_ja
        return self.description

    def is_bookable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.status == MissionStatus.ON_SALE and now < self.booking_cutoff


class ScheduleChange(models.Model):
    """A slip (or advance) of a mission's launch window. Recorded, never overwritten."""

    mission = models.ForeignKey(Mission, on_delete=models.CASCADE, related_name="schedule_changes")
    old_window_start = models.DateTimeField()
    old_window_end = models.DateTimeField()
    new_window_start = models.DateTimeField()
    new_window_end = models.DateTimeField()
    reason = models.TextField(_("reason"))
    announced_at = models.DateTimeField(default=timezone.now)
    announced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-announced_at", "-pk"]
        verbose_name = _("schedule change")
        constraints = [
            models.CheckConstraint(
                condition=Q(new_window_start__lte=F("new_window_end")),
                name="schedule_change_window_ordered",
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="schedule_change_has_reason"),
        ]

    def __str__(self) -> str:
        old, new = self.old_window_start, self.new_window_start
        return f"{self.mission.code}: {old:%Y-%m-%d} → {new:%Y-%m-%d}"


class SlotClass(LocalisedNameMixin, models.Model):
    """What is sold on a mission, like a fare class, but never nested: classes partition the
    lander's capacity. ``taken_g``/``taken_units`` are counters changed only by the booking
    services under this row's lock."""

    mission = models.ForeignKey(Mission, on_delete=models.CASCADE, related_name="slot_classes")
    name = models.CharField(_("name"), max_length=100)
    name_ja = models.CharField(_("name (Japanese)"), max_length=100, blank=True)
    position = models.ForeignKey(
        LanderPosition,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="slot_classes",
        verbose_name=_("lander position"),
    )
    destination = models.CharField(
        _("destination"),
        max_length=20,
        choices=Destination.choices,
        default=Destination.LUNAR_SURFACE,
    )
    pricing = models.CharField(
        _("pricing"), max_length=10, choices=Pricing.choices, default=Pricing.PER_KG
    )
    capacity_g = models.PositiveIntegerField(
        _("capacity (g)"), help_text=_("For per-unit classes: units × unit mass.")
    )
    taken_g = models.PositiveIntegerField(_("taken (g)"), default=0, editable=False)
    unit_mass_g = models.PositiveIntegerField(_("unit mass (g)"), null=True, blank=True)
    capacity_units = models.PositiveIntegerField(_("capacity (units)"), null=True, blank=True)
    taken_units = models.PositiveIntegerField(_("taken (units)"), default=0, editable=False)
    min_mass_g = models.PositiveIntegerField(_("minimum per booking (g)"), default=1)
    max_mass_g = models.PositiveIntegerField(_("maximum per booking (g)"), default=1)
    mass_step_g = models.PositiveIntegerField(_("mass step (g)"), default=1)
    min_quantity = models.PositiveIntegerField(_("minimum units"), null=True, blank=True)
    max_quantity = models.PositiveIntegerField(_("maximum units"), null=True, blank=True)
    max_length_mm = models.PositiveIntegerField(_("max length (mm)"))
    max_width_mm = models.PositiveIntegerField(_("max width (mm)"))
    max_height_mm = models.PositiveIntegerField(_("max height (mm)"))
    max_power_w = models.PositiveIntegerField(_("max power (W)"), default=0)
    sold_on_web = models.BooleanField(_("sold on the web"), default=True)
    sold_on_api = models.BooleanField(_("sold through the API"), default=True)
    sold_on_admin = models.BooleanField(_("sold by sales"), default=True)
    hold_minutes_web = models.PositiveIntegerField(_("web hold (minutes)"), default=20)
    hold_minutes_api = models.PositiveIntegerField(_("API hold (minutes)"), default=3 * 24 * 60)
    hold_minutes_admin = models.PositiveIntegerField(_("sales hold (minutes)"), default=7 * 24 * 60)
    rebooking_fee_percent = models.PositiveSmallIntegerField(
        _("rebooking fee (%)"),
        default=10,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text=_(
            "Share of the price charged when a customer whose payload is not ready moves to "
            "a later mission. A provider's delay moves bookings free of charge."
        ),
    )
    inert_only = models.BooleanField(
        _("inert items only"),
        default=False,
        help_text=_("Consumer capsules: no power, no data, no liquids; a message is enough."),
    )
    payment_plan = models.ForeignKey(
        "PaymentPlan",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="slot_classes",
        verbose_name=_("payment plan"),
        help_text=_("Empty: paid in full when booked."),
    )
    tax_treatment = models.CharField(
        _("tax treatment"),
        max_length=12,
        choices=TaxTreatment.choices,
        default=TaxTreatment.STANDARD,
        help_text=_("Japanese consumption tax on this class's prices, which include it."),
    )
    sort_order = models.PositiveSmallIntegerField(default=0)

    objects = SlotClassQuerySet.as_manager()

    class Meta:
        ordering = ["mission", "sort_order", "pk"]
        verbose_name = _("slot class")
        verbose_name_plural = _("slot classes")
        constraints = [
            models.CheckConstraint(condition=Q(capacity_g__gt=0), name="slot_capacity_positive"),
            models.CheckConstraint(
                condition=Q(tax_treatment__in=TaxTreatment.values), name="slot_tax_treatment_valid"
            ),
            models.CheckConstraint(
                condition=Q(taken_g__gte=0, taken_g__lte=F("capacity_g")),
                name="slot_taken_within_capacity",
                violation_error_message=_("Capacity cannot go below what is already booked."),
            ),
            models.CheckConstraint(
                condition=Q(mass_step_g__gt=0, min_mass_g__gt=0)
                & Q(min_mass_g__lte=F("max_mass_g"))
                & Q(max_mass_g__lte=F("capacity_g")),
                name="slot_mass_limits_ordered",
            ),
            models.CheckConstraint(
                # NullIf: a zero step is slot_mass_limits_ordered's to refuse, not a
                # division by zero that PostgreSQL reports as a DataError.
                condition=Exact(Mod(F("min_mass_g"), NullIf(F("mass_step_g"), 0)), 0)
                & Exact(Mod(F("max_mass_g"), NullIf(F("mass_step_g"), 0)), 0),
                name="slot_mass_limits_on_step",
            ),
            models.CheckConstraint(
                condition=Q(max_length_mm__gt=0, max_width_mm__gt=0, max_height_mm__gt=0),
                name="slot_envelope_positive",
            ),
            models.CheckConstraint(
                condition=Q(
                    hold_minutes_web__gt=0, hold_minutes_api__gt=0, hold_minutes_admin__gt=0
                ),
                name="slot_hold_times_positive",
            ),
            models.CheckConstraint(
                condition=Q(pricing__in=Pricing.values) & Q(destination__in=Destination.values),
                name="slot_enums_valid",
            ),
            models.CheckConstraint(
                condition=Q(rebooking_fee_percent__lte=100), name="slot_rebooking_fee_range"
            ),
            models.CheckConstraint(
                condition=(
                    Q(
                        pricing=Pricing.PER_KG,
                        unit_mass_g__isnull=True,
                        capacity_units__isnull=True,
                        min_quantity__isnull=True,
                        max_quantity__isnull=True,
                        taken_units=0,
                    )
                    | Q(
                        pricing=Pricing.PER_UNIT,
                        # A check passes on NULL, so each unit figure must be present too.
                        unit_mass_g__isnull=False,
                        capacity_units__isnull=False,
                        min_quantity__isnull=False,
                        max_quantity__isnull=False,
                        unit_mass_g__gt=0,
                        capacity_units__gt=0,
                        min_quantity__gte=1,
                        min_quantity__lte=F("max_quantity"),
                        taken_units__lte=F("capacity_units"),
                        capacity_g=F("capacity_units") * F("unit_mass_g"),
                        mass_step_g=F("unit_mass_g"),
                        min_mass_g=F("min_quantity") * F("unit_mass_g"),
                        max_mass_g=F("max_quantity") * F("unit_mass_g"),
                    )
                ),
                name="slot_unit_fields_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.mission.code} · {self.name}"

    # --- derived values -----------------------------------------------------------------
    @property
    def is_per_unit(self) -> bool:
        return self.pricing == Pricing.PER_UNIT

    @property
    def channels(self) -> list[str]:
        flags = [
            (Channel.WEB, self.sold_on_web),
            (Channel.API, self.sold_on_api),
            (Channel.ADMIN, self.sold_on_admin),
        ]
        return [str(channel) for channel, sold in flags if sold]

    def load_price(self, currency: str) -> Money | None:
        """Read the price in ``currency`` alone, for ``price_for`` to answer from: a hold
        needs one price, and one hand-written SELECT costs a fraction of compiling a prefetch
        of all of them (or a subquery annotation)."""
        from django.db import connection

        table = connection.ops.quote_name(SlotClassPrice._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                # The table name comes from model metadata, values are parameters.
                f"SELECT amount FROM {table} WHERE slot_class_id = %s AND currency = %s",  # noqa: S608
                [self.pk, currency],
            )
            row = cursor.fetchone()
        self._loaded_price = (currency, None if row is None else int(row[0]))
        return self.price_for(currency)

    def save_counters(self) -> None:
        """Write ``taken_g`` and ``taken_units`` under the class's row lock (the caller holds
        it), and move the catalogue cache on at commit as any save of the class does. One
        hand-written UPDATE: every hold, cancel and expiry runs it while others wait for the
        lock, and compiling ``save(update_fields=…)`` cost more than running it."""
        from django.db import connection

        from marketplace.cache import catalogue_changed

        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                # Names come from model metadata, values are parameters.
                f"UPDATE {quote(self._meta.db_table)} SET taken_g = %s, taken_units = %s "  # noqa: S608
                "WHERE id = %s",
                [self.taken_g, self.taken_units, self.pk],
            )
        catalogue_changed()

    def sells_on(self, channel: str) -> bool:
        return channel in self.channels

    def hold_minutes_for(self, channel: str) -> int:
        return {
            Channel.WEB: self.hold_minutes_web,
            Channel.API: self.hold_minutes_api,
            Channel.ADMIN: self.hold_minutes_admin,
        }[Channel(channel)]

    def _lapsed(self, field: str) -> int:
        annotated = getattr(self, field, None)
        if annotated is not None:
            return int(annotated)
        from bookings.models import Booking  # read without the catalogue annotation

        total = Booking.objects.filter(
            slot_class=self, status="held", hold_expires_at__lte=timezone.now()
        ).aggregate(total=models.Sum("mass_g" if field == "lapsed_g" else "quantity"))["total"]
        return int(total or 0)

    @property
    def available_g(self) -> int:
        """Free mass: capacity − taken + holds past expiry not yet swept."""
        return self.capacity_g - self.taken_g + self._lapsed("lapsed_g")

    @property
    def available_units(self) -> int | None:
        if not self.is_per_unit or self.capacity_units is None:
            return None
        return self.capacity_units - self.taken_units + self._lapsed("lapsed_units")

    @property
    def sold_fraction(self) -> float:
        """For the capacity bar only (a display ratio, never money or mass arithmetic)."""
        return 1 - self.available_g / self.capacity_g if self.capacity_g else 1.0

    @property
    def max_dimensions_mm(self) -> list[int]:
        return [self.max_length_mm, self.max_width_mm, self.max_height_mm]

    def price_for(self, currency: str) -> Money | None:
        """The price per kg or per unit in ``currency``; uses the price ``load_price`` read or
        prefetched prices when present."""
        loaded: tuple[str, int | None] | None = getattr(self, "_loaded_price", None)
        if loaded is not None and loaded[0] == currency:
            return None if loaded[1] is None else Money(loaded[1], currency)
        for price in self.prices.all():
            if price.currency == currency:
                return Money(price.amount, price.currency)
        return None

    def total_price(self, *, currency: str, mass_g: int, quantity: int | None = None) -> Money:
        """The contract's rule: per-kg ``price × mass_g / 1000`` rounded half up to the minor
        unit; per-unit ``unit price × quantity``. The one function behind every quote."""
        unit = self.price_for(currency)
        if unit is None:
            raise ValueError(f"{currency} is not offered for {self}")
        if self.is_per_unit:
            if quantity is None:
                raise ValueError("per-unit classes are priced by quantity")
            return Money(unit.amount * quantity, currency)
        return Money(divide_half_up(unit.amount * mass_g, 1000), currency)

    def clean(self) -> None:
        """Derive per-unit mass limits from the unit figures, and say what is wrong in words
        a salesperson understands before the database constraints would refuse it."""
        errors: dict[str, list[str]] = {}
        if self.pricing == Pricing.PER_UNIT:
            for field in ("unit_mass_g", "capacity_units", "min_quantity", "max_quantity"):
                if not getattr(self, field):
                    errors.setdefault(field, []).append(
                        str(_("Per-unit classes need this, and it must be at least 1."))
                    )
            if not errors:
                unit_mass_g, capacity_units = self.unit_mass_g or 0, self.capacity_units or 0
                min_quantity, max_quantity = self.min_quantity or 0, self.max_quantity or 0
                if min_quantity > max_quantity:
                    errors["max_quantity"] = [str(_("The maximum must not be below the minimum."))]
                if max_quantity > capacity_units:
                    errors["max_quantity"] = [
                        str(_("The maximum per booking cannot exceed the class's units."))
                    ]
                self.capacity_g = capacity_units * unit_mass_g
                self.mass_step_g = unit_mass_g
                self.min_mass_g = min_quantity * unit_mass_g
                self.max_mass_g = max_quantity * unit_mass_g
                if self.taken_units > capacity_units:
                    errors["capacity_units"] = [
                        str(_("%(taken)s units are already booked; capacity cannot go lower."))
                        % {"taken": self.taken_units}
                    ]
        else:
            self.unit_mass_g = self.capacity_units = None
            self.min_quantity = self.max_quantity = None
            step = self.mass_step_g or 0
            if step <= 0:
                errors["mass_step_g"] = [str(_("The mass step must be at least 1 g."))]
            else:
                for field in ("min_mass_g", "max_mass_g"):
                    value = getattr(self, field) or 0
                    if value <= 0 or value % step:
                        errors.setdefault(field, []).append(
                            str(_("Must be a positive multiple of the mass step (%(step)s g)."))
                            % {"step": step}
                        )
            if self.min_mass_g and self.max_mass_g and self.min_mass_g > self.max_mass_g:
                errors.setdefault("max_mass_g", []).append(
                    str(_("The maximum must not be below the minimum."))
                )
            if self.capacity_g and self.max_mass_g and self.max_mass_g > self.capacity_g:
                errors.setdefault("max_mass_g", []).append(
                    str(_("The maximum per booking cannot exceed the class capacity."))
                )
        if self.capacity_g is not None and self.taken_g > self.capacity_g:
            errors.setdefault("capacity_g", []).append(
                str(_("%(taken)s are already booked; capacity cannot go lower."))
                % {"taken": format_mass(self.taken_g)}
            )
        if self.position_id and self.mission_id:
            position = self.position
            mission = self.mission
            if position is not None and position.lander_id != mission.lander_id:
                errors["position"] = [str(_("This position belongs to another lander model."))]
        if errors:
            raise ValidationError(errors)


class SlotClassPrice(models.Model):
    """A price per kg (or per unit) in one currency, in that currency's minor unit."""

    slot_class = models.ForeignKey(SlotClass, on_delete=models.CASCADE, related_name="prices")
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    amount = models.BigIntegerField(
        _("amount (minor units)"),
        validators=[MinValueValidator(1)],
        help_text=_("Per kg or per unit, in the currency's minor unit: yen, or US cents."),
    )

    class Meta:
        # By the column: "slot_class" would order by the class's own ordering, joining the
        # class and its mission into every prefetch of prices (one per hold).
        ordering = ["slot_class_id", "currency"]
        verbose_name = _("price")
        constraints = [
            models.UniqueConstraint(
                fields=["slot_class", "currency"],
                name="slot_price_one_per_currency",
                violation_error_message=_("This class already has a price in that currency."),
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="slot_price_positive"),
            models.CheckConstraint(
                condition=Q(currency__in=Currency.values), name="slot_price_currency_valid"
            ),
        ]

    def __str__(self) -> str:
        return str(Money(self.amount, self.currency))


class CancellationTier(models.Model):
    """Cancellation policy: cancelling at least ``days_before_launch`` days before the launch
    window opens refunds ``refund_percent`` of the price. The tier with the most days that
    still applies wins; with none, nothing is refunded."""

    slot_class = models.ForeignKey(
        SlotClass, on_delete=models.CASCADE, related_name="cancellation_tiers"
    )
    days_before_launch = models.PositiveIntegerField(_("days before launch"))
    refund_percent = models.PositiveSmallIntegerField(
        _("refund (%)"), validators=[MinValueValidator(0), MaxValueValidator(100)]
    )

    class Meta:
        ordering = ["slot_class", "-days_before_launch"]
        verbose_name = _("cancellation tier")
        constraints = [
            models.UniqueConstraint(
                fields=["slot_class", "days_before_launch"], name="cancellation_tier_unique"
            ),
            models.CheckConstraint(
                condition=Q(refund_percent__gte=0, refund_percent__lte=100),
                name="cancellation_tier_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return f"≥ {self.days_before_launch} d: {self.refund_percent}%"


class MissionContact(models.Model):
    """Someone at the lander company or the airline's operations who receives the mission's
    manifests and operational notices."""

    mission = models.ForeignKey(Mission, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(_("name"), max_length=150)
    email = models.EmailField(_("e-mail"))
    role = models.CharField(_("role"), max_length=100, default="operations")
    receives_manifests = models.BooleanField(_("receives manifests"), default=True)

    class Meta:
        ordering = ["mission", "name"]
        verbose_name = _("mission contact")
        constraints = [
            models.UniqueConstraint(fields=["mission", "email"], name="mission_contact_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"
