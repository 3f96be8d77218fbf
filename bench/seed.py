"""Data for the benchmark: a catalogue the size sales plan for, with bookings in every state,
reseller keys for the sale opening, and a mountain of lapsed holds for the expiry sweep.

Rows go in with ``bulk_create`` (one INSERT per batch, not one per row); the counters on each
slot class are set from the bookings written, so the data satisfies the same invariant the
booking services keep (``taken_g`` = mass of held and confirmed bookings). Prices come from
``SlotClass.total_price``, the function behind every quote, and API keys from
``api_key_issue``, so keys authenticate exactly as real ones do.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Model, Sum
from django.utils import timezone

from accounts.models import Organisation
from accounts.services import api_key_issue, reseller_get_or_create
from bookings.models import (
    REFERENCE_ALPHABET,
    REFERENCE_LENGTH,
    Booking,
    BookingStatus,
    ExportClassification,
    HazardType,
    PayloadDeclaration,
    ReviewStatus,
)
from marketplace.management.commands.load_demo_data import (
    CANCELLATION_TIERS,
    LANDERS,
    MISSIONS,
    ClassSpec,
)
from marketplace.models import (
    CancellationTier,
    Channel,
    Destination,
    LanderModel,
    LanderPosition,
    Mission,
    MissionStatus,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
)
from marketplace.money import Currency

BATCH = 2_000
SALE_MASSES_G = (100, 200, 300)
SALE_STEP_G = 100


# The demo's flagship mission shows what a mission sells (deck, side mount, rover-hosted, orbit
# release, message capsules); every benchmark mission sells the same five classes.
_DEMO_MISSION = next(spec for spec in MISSIONS if spec.code == "M3")
CLASS_SPECS: list[ClassSpec] = _DEMO_MISSION.classes
# code: (name, length, width, height mm, power W, data kbps, min °C, max °C)
POSITIONS: dict[str, tuple[str, int, int, int, int, int, int, int]] = LANDERS[_DEMO_MISSION.lander][
    "positions"
]
# Statuses of the seeded bookings, by share: most are sold, some are live holds, some holds
# have lapsed without a sweep (the catalogue's availability subquery must count them free).
STATUS_MIX = (
    ("confirmed", 50),
    ("held", 25),
    ("lapsed", 15),
    ("cancelled", 10),
)


@dataclass
class Catalogue:
    """What the scenarios need to know about the seeded data."""

    mission_codes: list[str]
    detail_code: str  # a mission with every class, schedule history and bookings
    class_ids: list[int]
    sale_class_id: int
    sale_capacity_g: int
    reseller_keys: list[str]
    bookings: int
    counts: dict[str, int] = field(default_factory=dict)


def unique_references(
    count: int, *, rng: random.Random, taken: set[str] | None = None
) -> list[str]:
    """``count`` booking references no one has, from the project's alphabet."""
    seen = set(taken or ())
    out: list[str] = []
    while len(out) < count:
        reference = "".join(rng.choices(REFERENCE_ALPHABET, k=REFERENCE_LENGTH))
        if reference not in seen:
            seen.add(reference)
            out.append(reference)
    return out


def issue_reseller_keys(count: int, *, prefix: str = "Bench reseller") -> list[str]:
    """One reseller with one fresh key each; returns the raw keys (shown once, as in life)."""
    keys = []
    for number in range(1, count + 1):
        reseller, _ = reseller_get_or_create(name=f"{prefix} {number}")
        keys.append(api_key_issue(organisation=reseller, name="benchmark").raw_key)
    return keys


def _landers(sale_capacity_g: int) -> tuple[LanderModel, LanderModel, dict[tuple[int, str], int]]:
    regular, _ = LanderModel.objects.get_or_create(
        name="Tsuki-300 mid-size lander (bench)",
        defaults={"manufacturer": "Bench", "payload_capacity_g": 300_000},
    )
    # The sale opening needs a class large enough to take a few thousand small holds.
    others = sum(int(spec.fields()["capacity_g"]) for spec in CLASS_SPECS[1:])
    sale, _ = LanderModel.objects.get_or_create(
        name="Tsuki-1000 heavy lander (bench)",
        defaults={"manufacturer": "Bench", "payload_capacity_g": sale_capacity_g + others},
    )
    positions: list[LanderPosition] = []
    for lander in (regular, sale):
        for code, (name, length, width, height, power, data, low, high) in POSITIONS.items():
            positions.append(
                LanderPosition(
                    lander=lander,
                    code=code,
                    name=name,
                    max_length_mm=length,
                    max_width_mm=width,
                    max_height_mm=height,
                    max_power_w=power,
                    max_data_kbps=data,
                    min_temperature_c=low,
                    max_temperature_c=high,
                )
            )
    LanderPosition.objects.bulk_create(positions, ignore_conflicts=True)
    position_ids = {
        (lander_id, code): pk
        for pk, lander_id, code in LanderPosition.objects.filter(
            lander__in=[regular, sale]
        ).values_list("pk", "lander_id", "code")
    }
    return regular, sale, position_ids


def _mission_status(index: int) -> str:
    # Mostly on sale, as the catalogue is in a busy season; a few of the other listed states.
    if index in (17, 18):
        return MissionStatus.PLANNED
    if index == 19:
        return MissionStatus.SALES_CLOSED
    return MissionStatus.ON_SALE


@transaction.atomic
def seed_catalogue(
    *,
    missions: int = 20,
    bookings_per_class: int = 40,
    sale_capacity_g: int = 120_000,
    resellers: int = 8,
    code_prefix: str = "B",
    now: datetime | None = None,
    seed: int = 20_260_101,
) -> Catalogue:
    """Seed ``missions`` missions × 5 slot classes with JPY and USD prices, cancellation
    tiers, some schedule history, ``bookings_per_class`` bookings per class in a realistic
    mix of states, and ``resellers`` reseller keys.

    The first mission's deck is the sale-opening class: it has no bookings and
    ``sale_capacity_g`` of capacity, with small holds allowed (100–300 g)."""
    if missions < 2:
        raise ValueError("the catalogue needs at least two missions (sale + detail)")
    now = now or timezone.now()
    rng = random.Random(seed)
    regular, heavy, position_ids = _landers(sale_capacity_g)

    mission_rows = []
    for index in range(missions):
        start = now + timedelta(days=200 + 45 * index)
        status = _mission_status(index)
        cutoff = (
            now - timedelta(days=5)
            if status == MissionStatus.SALES_CLOSED
            else (start - timedelta(days=120))
        )
        mission_rows.append(
            Mission(
                code=f"{code_prefix}{index + 1:02d}",
                name=f"Benchmark mission {index + 1}",
                name_ja=f"ベンチマークミッション{index + 1}",
                lander=heavy if index == 0 else regular,
                destination=Destination.LUNAR_SURFACE,
                landing_site=f"Site {index + 1}, lunar {'far' if index % 2 else 'near'} side",
                launch_window_start=start,
                launch_window_end=start + timedelta(days=60),
                booking_cutoff=cutoff,
                status=status,
                description="A benchmark mission with every kind of slot class.",
                description_ja="すべての種類のスロットクラスを持つベンチマークミッション。",
            )
        )
    Mission.objects.bulk_create(mission_rows)
    mission_list = list(
        Mission.objects.filter(code__in=[m.code for m in mission_rows]).order_by("code")
    )

    changes = []
    for index, mission in enumerate(mission_list):
        if index % 4 == 1:  # every fourth mission has slipped once (the detail mission too)
            old_start = mission.launch_window_start - timedelta(days=365)
            changes.append(
                ScheduleChange(
                    mission=mission,
                    old_window_start=old_start,
                    old_window_end=old_start + timedelta(days=60),
                    new_window_start=mission.launch_window_start,
                    new_window_end=mission.launch_window_end,
                    reason="The launch provider's manifest moved; bookings carry over.",
                    announced_at=now - timedelta(days=30),
                )
            )
    ScheduleChange.objects.bulk_create(changes)

    class_rows = []
    for index, mission in enumerate(mission_list):
        for order, spec in enumerate(CLASS_SPECS):
            values = spec.fields() | {"name": spec.name}
            if index == 0 and order == 0:
                values |= {
                    "name": "Lander deck (sale opening)",
                    "capacity_g": sale_capacity_g,
                    "min_mass_g": SALE_STEP_G,
                    "max_mass_g": max(SALE_MASSES_G),
                    "mass_step_g": SALE_STEP_G,
                }
            class_rows.append(
                SlotClass(
                    mission=mission,
                    position_id=position_ids[(mission.lander_id, spec.position)],
                    sort_order=order,
                    **values,
                )
            )
    SlotClass.objects.bulk_create(class_rows)
    classes = list(
        SlotClass.objects.filter(mission__in=mission_list).order_by("mission__code", "sort_order")
    )
    SlotClassPrice.objects.bulk_create(
        SlotClassPrice(slot_class=slot_class, currency=currency, amount=amount)
        for slot_class, spec in zip(classes, CLASS_SPECS * len(mission_list), strict=True)
        for currency, amount in spec.prices.items()
    )
    CancellationTier.objects.bulk_create(
        CancellationTier(slot_class=slot_class, days_before_launch=days, refund_percent=percent)
        for slot_class in classes
        for days, percent in CANCELLATION_TIERS.items()
    )

    keys = issue_reseller_keys(resellers)
    organisation_ids = list(
        Organisation.objects.filter(name__startswith="Bench reseller").values_list("pk", flat=True)
    )
    sale_class = classes[0]
    booked_classes = list(
        SlotClass.objects.filter(pk__in=[c.pk for c in classes[1:]])
        .select_related("mission")
        .prefetch_related("prices")
        .order_by("pk")
    )
    count = _seed_bookings(
        booked_classes,
        per_class=bookings_per_class,
        organisation_ids=organisation_ids,
        now=now,
        rng=rng,
    )
    return Catalogue(
        mission_codes=[m.code for m in mission_list],
        detail_code=mission_list[1].code,
        class_ids=[c.pk for c in classes],
        sale_class_id=sale_class.pk,
        sale_capacity_g=sale_capacity_g,
        reseller_keys=keys,
        bookings=count,
        counts={
            "missions": len(mission_list),
            "slot_classes": len(classes),
            "prices": len(classes) * 2,
            "schedule_changes": len(changes),
            "bookings": count,
            "resellers": resellers,
        },
    )


def _pick_status(rng: random.Random) -> str:
    return rng.choices([s for s, _ in STATUS_MIX], weights=[w for _, w in STATUS_MIX])[0]


def _seed_bookings(
    classes: Iterable[SlotClass],
    *,
    per_class: int,
    organisation_ids: list[int],
    now: datetime,
    rng: random.Random,
) -> int:
    rows: list[Booking] = []
    counters: dict[int, tuple[int, int]] = {}
    for slot_class in classes:
        taken_g = taken_units = 0
        # Keep what counts against capacity to half of it, whatever the class's size.
        budget_g = slot_class.capacity_g // 2
        top_g = max(slot_class.min_mass_g, budget_g // max(per_class, 1))
        for _ in range(per_class):
            quantity: int | None = None
            if slot_class.is_per_unit:
                quantity = rng.randint(slot_class.min_quantity or 1, slot_class.max_quantity or 1)
                mass_g = quantity * (slot_class.unit_mass_g or 1)
            else:
                steps = max(0, (min(top_g, slot_class.max_mass_g) - slot_class.min_mass_g))
                steps //= slot_class.mass_step_g
                mass_g = slot_class.min_mass_g + rng.randint(0, steps) * slot_class.mass_step_g
            status = _pick_status(rng)
            counts = status in ("confirmed", "held", "lapsed")
            if counts and taken_g + mass_g > budget_g:
                status = "cancelled"
                counts = False
            currency = rng.choice([Currency.JPY, Currency.USD])
            price = slot_class.total_price(currency=currency, mass_g=mass_g, quantity=quantity)
            created = now - timedelta(days=rng.randint(1, 90), minutes=rng.randint(0, 1440))
            rows.append(
                _booking(
                    slot_class=slot_class,
                    organisation_id=rng.choice(organisation_ids),
                    status=status,
                    mass_g=mass_g,
                    quantity=quantity,
                    currency=currency,
                    price_amount=price.amount,
                    created=created,
                    now=now,
                )
            )
            if counts:
                taken_g += mass_g
                taken_units += quantity or 0
        counters[slot_class.pk] = (taken_g, taken_units)
    references = unique_references(len(rows), rng=rng)
    for booking, reference in zip(rows, references, strict=True):
        booking.reference = reference
    Booking.objects.bulk_create(rows, batch_size=BATCH)
    PayloadDeclaration.objects.bulk_create(
        (
            PayloadDeclaration(
                booking=booking,
                name=f"Payload {booking.reference}",
                mass_g=booking.mass_g,
                length_mm=100,
                width_mm=100,
                height_mm=100,
            )
            for booking in rows
        ),
        batch_size=BATCH,
    )
    for class_id, (taken_g, taken_units) in counters.items():
        SlotClass.objects.filter(pk=class_id).update(taken_g=taken_g, taken_units=taken_units)
    return len(rows)


def _booking(
    *,
    slot_class: SlotClass,
    organisation_id: int,
    status: str,
    mass_g: int,
    quantity: int | None,
    currency: str,
    price_amount: int,
    created: datetime,
    now: datetime,
) -> Booking:
    booking = Booking(
        organisation_id=organisation_id,
        channel=Channel.API,
        slot_class=slot_class,
        mass_g=mass_g,
        quantity=quantity,
        currency=currency,
        price_amount=price_amount,
        status=BookingStatus.HELD,
        hold_expires_at=created + timedelta(days=3),
        customer_name="Benchmark Customer",
        customer_email="customer@bench.example",
        created_at=created,
    )
    if status == "held":
        booking.hold_expires_at = now + timedelta(days=2)
    elif status == "lapsed":
        booking.hold_expires_at = now - timedelta(hours=1)
    elif status == "confirmed":
        booking.status = BookingStatus.CONFIRMED
        booking.confirmed_at = created + timedelta(hours=2)
        booking.on_account = True
    else:
        booking.status = BookingStatus.CANCELLED
        booking.cancelled_at = created + timedelta(hours=5)
        booking.refund_amount = 0
    return booking


# --- the expiry sweep ----------------------------------------------------------------------


@dataclass(frozen=True)
class LapsedHolds:
    class_ids: list[int]
    bookings: int
    mass_g: int


def seed_lapsed_holds(
    *,
    total: int = 100_000,
    classes: int = 4,
    code: str = "SWEEP",
    now: datetime | None = None,
    seed: int = 7,
) -> LapsedHolds:
    """``total`` held bookings already past their expiry, spread over ``classes`` slot
    classes of a mission of their own, with each class's counters holding their mass (as the
    services would have left them), written with ``insert_rows``."""
    now = now or timezone.now()
    rng = random.Random(seed)
    mass_g = 100
    per_class = -(-total // classes)
    lander, _ = LanderModel.objects.get_or_create(
        name="Sweep lander (bench)",
        defaults={"payload_capacity_g": per_class * mass_g * classes},
    )
    mission = Mission.objects.create(
        code=code,
        name="Benchmark expiry sweep",
        lander=lander,
        launch_window_start=now + timedelta(days=400),
        launch_window_end=now + timedelta(days=430),
        booking_cutoff=now + timedelta(days=300),
        status=MissionStatus.ON_SALE,
    )
    slot_classes = SlotClass.objects.bulk_create(
        SlotClass(
            mission=mission,
            name=f"Sweep class {number + 1}",
            capacity_g=per_class * mass_g,
            min_mass_g=mass_g,
            max_mass_g=mass_g,
            mass_step_g=mass_g,
            max_length_mm=100,
            max_width_mm=100,
            max_height_mm=100,
            sort_order=number,
        )
        for number in range(classes)
    )
    organisation, _ = reseller_get_or_create(name="Bench sweep reseller")
    references = unique_references(total, rng=rng, taken=_existing_references())
    template = Booking(
        organisation_id=organisation.pk,
        channel=Channel.API,
        mass_g=mass_g,
        currency=Currency.JPY,
        price_amount=18_000,
        status=BookingStatus.HELD,
    )
    insert_rows(
        template,
        ("reference", "slot_class_id", "hold_expires_at", "created_at"),
        (
            (
                references[n],
                slot_classes[n % classes].pk,
                now - timedelta(minutes=1 + n % 600),
                now - timedelta(days=3, minutes=n % 600),
            )
            for n in range(total)
        ),
    )
    for slot_class in slot_classes:
        held = Booking.objects.filter(slot_class=slot_class, status=BookingStatus.HELD).aggregate(
            total=Sum("mass_g")
        )["total"]
        SlotClass.objects.filter(pk=slot_class.pk).update(taken_g=held or 0)
    return LapsedHolds(
        class_ids=[c.pk for c in slot_classes], bookings=total, mass_g=total * mass_g
    )


# --- a mission with a long manifest (and a busy booking changelist) ---------------------


@dataclass(frozen=True)
class ManifestMission:
    mission_id: int
    code: str
    bookings: int
    class_ids: list[int]


# What a real manifest carries besides plain payloads: reviews in every stage, some hazards,
# some export-controlled items (the manifest's totals and alerts count them).
_REVIEWS = (
    (ReviewStatus.ACCEPTED, 50),
    (ReviewStatus.INTEGRATED, 20),
    (ReviewStatus.SAFETY_REVIEW, 15),
    (ReviewStatus.DATA_COMPLETE, 14),
    (ReviewStatus.REJECTED, 1),
)
_EXPORTS = (
    (ExportClassification.NOT_CONTROLLED, 70),
    (ExportClassification.EAR99, 20),
    (ExportClassification.EAR_LISTED, 6),
    (ExportClassification.JP_FEFTA_LISTED, 4),
)
_HAZARDS: tuple[list[dict[str, object]], ...] = (
    [],
    [],
    [],
    [],
    [{"type": HazardType.LITHIUM_BATTERY, "energy_wh": 42}],
    [{"type": HazardType.PRESSURE_VESSEL, "meop_kpa": 350}],
)


def seed_manifest_mission(
    *,
    total: int = 10_000,
    classes: int = 5,
    code: str = "MANIFEST",
    now: datetime | None = None,
    seed: int = 10_000,
) -> ManifestMission:
    """A mission past its booking cutoff with ``total`` confirmed bookings spread over
    ``classes`` slot classes, each with a payload declaration (a mix of review stages,
    hazards and export classes, end customers behind resellers), written with
    ``insert_rows``; each class's counter holds exactly its bookings' mass."""
    now = now or timezone.now()
    rng = random.Random(seed)
    masses = [rng.randrange(100, 5_001, 100) for _ in range(total)]
    per_class_g = [sum(masses[n] for n in range(c, total, classes)) for c in range(classes)]
    lander, _ = LanderModel.objects.get_or_create(
        name="Manifest lander (bench)",
        defaults={"manufacturer": "Bench", "payload_capacity_g": sum(per_class_g) + 1_000},
    )
    mission = Mission.objects.create(
        code=code,
        name="Benchmark manifest mission",
        name_ja="ベンチマーク積荷目録ミッション",
        lander=lander,
        destination=Destination.LUNAR_SURFACE,
        landing_site="Mare Imbrium",
        launch_window_start=now + timedelta(days=60),
        launch_window_end=now + timedelta(days=90),
        booking_cutoff=now - timedelta(days=1),
        status=MissionStatus.SALES_CLOSED,
    )
    slot_classes = SlotClass.objects.bulk_create(
        SlotClass(
            mission=mission,
            name=f"Manifest class {number + 1}",
            capacity_g=per_class_g[number],
            taken_g=per_class_g[number],
            min_mass_g=100,
            max_mass_g=min(5_000, per_class_g[number]),
            mass_step_g=100,
            max_length_mm=500,
            max_width_mm=500,
            max_height_mm=500,
            sort_order=number,
        )
        for number in range(classes)
    )
    organisation_ids = [
        reseller_get_or_create(name=f"Bench manifest reseller {n}")[0].pk for n in (1, 2, 3)
    ]
    references = unique_references(total, rng=rng, taken=_existing_references())
    template = Booking(
        channel=Channel.API,
        currency=Currency.JPY,
        status=BookingStatus.CONFIRMED,
        on_account=True,
        customer_email="customer@bench.example",
    )
    insert_rows(
        template,
        (
            "reference",
            "organisation_id",
            "slot_class_id",
            "mass_g",
            "price_amount",
            "customer_name",
            "customer_organisation",
            "created_at",
            "confirmed_at",
        ),
        (
            (
                references[n],
                organisation_ids[n % len(organisation_ids)],
                slot_classes[n % classes].pk,
                masses[n],
                masses[n] * 1_500,
                f"Customer {n}",
                f"End customer {n % 400}",
                now - timedelta(days=120, minutes=n),
                now - timedelta(days=119, minutes=n),
            )
            for n in range(total)
        ),
    )
    booking_ids = dict(
        Booking.objects.filter(slot_class__mission=mission).values_list("reference", "pk")
    )
    reviews = rng.choices([r for r, _ in _REVIEWS], weights=[w for _, w in _REVIEWS], k=total)
    exports = rng.choices([e for e, _ in _EXPORTS], weights=[w for _, w in _EXPORTS], k=total)
    insert_rows(
        PayloadDeclaration(length_mm=200, width_mm=200, height_mm=100, power_w=5),
        (
            "booking_id",
            "name",
            "mass_g",
            "data_kbps",
            "hazards",
            "export_classification",
            "review_status",
        ),
        (
            (
                booking_ids[references[n]],
                f"Payload {references[n]}",
                masses[n],
                rng.choice((0, 8, 64, 256)),
                _HAZARDS[n % len(_HAZARDS)],
                exports[n],
                reviews[n],
            )
            for n in range(total)
        ),
    )
    return ManifestMission(
        mission_id=mission.pk, code=code, bookings=total, class_ids=[c.pk for c in slot_classes]
    )


def insert_rows(
    template: Model, varying: tuple[str, ...], values: Iterable[tuple[object, ...]]
) -> int:
    """Insert one row per tuple of ``values`` (for the fields named in ``varying``, by
    attname), every other column taken from the unsaved ``template``; values go through each
    field's ``get_db_prep_save``, as ``save()`` would send them. Returns the rows written.

    No model instances: building 100,000 of them for ``bulk_create`` cost more than the
    database's work. PostgreSQL gets ``COPY`` (Django's client-side cursor would split a
    large multi-row INSERT slowly, and ``executemany`` pays a round trip per row); SQLite,
    in-process, gets ``executemany``."""
    meta = template._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    by_name = {f.attname: f for f in fields}
    varying_fields = [by_name[name] for name in varying]
    constant = [
        (str(f.column), f.get_db_prep_save(f.pre_save(template, add=True), connection))
        for f in fields
        if f.attname not in varying
    ]
    columns = [column for column, _ in constant] + [str(f.column) for f in varying_fields]
    fixed = [value for _, value in constant]
    rows = (
        fixed
        + [f.get_db_prep_save(v, connection) for f, v in zip(varying_fields, row, strict=True)]
        for row in values
    )
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column_list = ", ".join(quote(column) for column in columns)
    written = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    written += 1
            return written
        sql = f"INSERT INTO {table} ({column_list}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608
        batch: list[list[Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                cursor.executemany(sql, batch)
                written, batch = written + len(batch), []
        if batch:
            cursor.executemany(sql, batch)
            written += len(batch)
    return written


def analyze_tables() -> None:
    """Refresh the query planner's statistics. A live database's autovacuum keeps them
    current; right after a bulk load they describe empty tables, and PostgreSQL then picks
    plans no production server would (measured: the catalogue's availability subqueries
    scanned every lapsed hold once per class until the first ANALYZE)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _existing_references() -> set[str]:
    return set(Booking.objects.values_list("reference", flat=True))
