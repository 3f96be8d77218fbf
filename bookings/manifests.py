"""Payload manifests: what flies on a mission, versioned, rendered and delivered.

A manifest is built from the mission's confirmed (and flown) bookings under the mission's row
lock. Its content is canonical JSON holding only state (no build time, no prices), so the same
state always gives the same SHA-256 digest and a rebuild of an unchanged state writes nothing.

Rebuilds are debounced through the outbox: every change that can alter a manifest calls
``manifest_request_rebuild``, which writes a ``manifest.rebuild`` row due at the end of the
current window (a lease nobody holds until then, so neither the on-commit dispatch nor the
sweep picks it up early). When a window's rows come due, the newest one builds and the older
ones step aside, so a burst of changes yields one version per window and mission.

A new version queues ``manifest.render`` (the PDF, in a worker, never in a request), which
queues ``manifest.deliver`` (one e-mail per contact, recorded once in ``ManifestDelivery``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation

from bookings.models import (
    Booking,
    BookingStatus,
    ExportClassification,
    HazardType,
    ManifestDelivery,
    ManifestVersion,
    OutboxMessage,
    ReviewStatus,
)
from bookings.outbox import outbox_handler, outbox_write
from marketplace.locks import mission_qs_for_update
from marketplace.models import Mission, MissionContact, SlotClass

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REBUILD_TOPIC = "manifest.rebuild"
RENDER_TOPIC = "manifest.render"
DELIVER_TOPIC = "manifest.deliver"
# Changes are gathered per window; a window's rebuild runs once it has closed, plus a little
# slack so a transaction that asked for the rebuild just before the boundary has committed.
REBUILD_WINDOW = timedelta(seconds=60)
REBUILD_SLACK = timedelta(seconds=5)

MANIFESTED_STATUSES = (BookingStatus.CONFIRMED, BookingStatus.FLOWN)
# Cleared to fly: everything before ``accepted`` is still under review, ``rejected`` is not.
CLEARED_REVIEW_STATUSES = (ReviewStatus.ACCEPTED, ReviewStatus.INTEGRATED, ReviewStatus.FLOWN)

# Air waybill style: a 3-digit prefix, a 7-digit serial and a check digit (serial mod 7).
WAYBILL_PREFIX = "871"
WAYBILL_SERIALS = 10_000_000


# --- waybill numbers --------------------------------------------------------------------


def waybill_number(booking_id: int) -> str:
    """The booking's waybill number, ``871-SSSSSSSC``: a pure function of the booking's id.
    The serial is the id modulo 10⁷ (unique for the first ten million bookings); the check
    digit is the serial mod 7, as on an air waybill."""
    serial = booking_id % WAYBILL_SERIALS
    return f"{WAYBILL_PREFIX}-{serial:07d}{serial % 7}"


def waybill_is_valid(number: str) -> bool:
    prefix, _, rest = number.partition("-")
    if prefix != WAYBILL_PREFIX or len(rest) != 8 or not rest.isascii() or not rest.isdigit():
        return False
    return int(rest[:7]) % 7 == int(rest[7])


# --- building -------------------------------------------------------------------------


def canonical_json(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def manifest_digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def _hazard_summary(hazards: Any) -> list[str]:
    if not isinstance(hazards, list):
        return []
    summary = []
    for hazard in hazards:
        if not isinstance(hazard, dict):
            continue
        kind = str(hazard.get("type") or "other")
        label = str(HazardType(kind).label) if kind in HazardType.values else kind
        if kind == HazardType.LITHIUM_BATTERY and hazard.get("energy_wh") is not None:
            label += f" {hazard['energy_wh']} Wh"
        elif kind == HazardType.PRESSURE_VESSEL and hazard.get("meop_kpa") is not None:
            label += f" MEOP {hazard['meop_kpa']} kPa"
        elif kind == HazardType.PROPELLANT and hazard.get("mass_g") is not None:
            label += f" {hazard['mass_g']} g"
        elif hazard.get("description"):
            label += f": {str(hazard['description']).strip()}"
        summary.append(label)
    return summary


_LINE_FIELDS = (
    "pk",
    "reference",
    "status",
    "slot_class_id",
    "mass_g",
    "quantity",
    "customer_name",
    "customer_organisation",
    "organisation__name",
    "organisation__kind",
    "payload__name",
    "payload__mass_g",
    "payload__length_mm",
    "payload__width_mm",
    "payload__height_mm",
    "payload__power_w",
    "payload__data_kbps",
    "payload__hazards",
    "payload__export_classification",
    "payload__review_status",
)


def _line(row: dict[str, Any], slot_class: SlotClass) -> dict[str, Any]:
    dims = [row["payload__length_mm"], row["payload__width_mm"], row["payload__height_mm"]]
    review = row["payload__review_status"] or ReviewStatus.DECLARED
    end_customer = ""
    if row["organisation__kind"] == "reseller":
        end_customer = row["customer_organisation"] or row["customer_name"] or ""
    return {
        "reference": row["reference"],
        "waybill": waybill_number(row["pk"]),
        "booking_status": row["status"],
        "slot_class_id": slot_class.pk,
        "slot_class": slot_class.name,
        "position": slot_class.position.code if slot_class.position else None,
        "customer": row["organisation__name"],
        "end_customer": end_customer,
        "payload": row["payload__name"] or "",
        "mass_g": row["mass_g"],
        "quantity": row["quantity"],
        "declared_mass_g": row["payload__mass_g"],
        "dimensions_mm": dims if None not in dims else None,
        "power_w": row["payload__power_w"],
        "data_kbps": row["payload__data_kbps"],
        "hazards": _hazard_summary(row["payload__hazards"]),
        "export_classification": row["payload__export_classification"] or "",
        "review_status": review,
        "cleared": review in CLEARED_REVIEW_STATUSES,
    }


def manifest_content(mission: Mission) -> dict[str, Any]:
    """The manifest of ``mission`` as it stands: two queries (classes, bookings with their
    organisation and payload), whatever the number of bookings. Ordered by class, then
    reference, so the same state always serialises the same way."""
    classes = list(
        SlotClass.objects.filter(mission_id=mission.pk)
        .select_related("position")
        .order_by("sort_order", "pk")
    )
    by_id = {slot_class.pk: slot_class for slot_class in classes}
    order = {slot_class.pk: index for index, slot_class in enumerate(classes)}
    rows = list(
        Booking.objects.filter(slot_class__mission_id=mission.pk, status__in=MANIFESTED_STATUSES)
        .order_by()
        .values(*_LINE_FIELDS)
    )
    rows.sort(key=lambda row: (order[row["slot_class_id"]], row["reference"]))
    # Hazard labels are canonical English whatever language the caller has active.
    with translation.override("en"):
        lines = [_line(row, by_id[row["slot_class_id"]]) for row in rows]

    per_class_mass: Counter[int] = Counter()
    per_class_units: Counter[int] = Counter()
    per_class_lines: Counter[int] = Counter()
    for line in lines:
        per_class_mass[line["slot_class_id"]] += line["mass_g"]
        per_class_units[line["slot_class_id"]] += line["quantity"] or 0
        per_class_lines[line["slot_class_id"]] += 1

    lander_capacity = mission.lander.payload_capacity_g
    class_totals = []
    alerts: list[dict[str, str]] = []
    for slot_class in classes:
        manifested = per_class_mass[slot_class.pk]
        class_totals.append(
            {
                "id": slot_class.pk,
                "name": slot_class.name,
                "name_ja": slot_class.name_ja,
                "position": slot_class.position.code if slot_class.position else None,
                "destination": slot_class.destination,
                "capacity_g": slot_class.capacity_g,
                "capacity_units": slot_class.capacity_units,
                "manifested_g": manifested,
                "manifested_units": per_class_units[slot_class.pk]
                if slot_class.is_per_unit
                else None,
                "remaining_g": slot_class.capacity_g - manifested,
                "lines": per_class_lines[slot_class.pk],
            }
        )
        if manifested > slot_class.capacity_g:
            alerts.append(
                {
                    "code": "class_over_capacity",
                    "message": f"{slot_class.name}: {manifested} g manifested exceeds the "
                    f"class capacity of {slot_class.capacity_g} g.",
                }
            )
    allocated = sum(slot_class.capacity_g for slot_class in classes)
    total_mass = sum(per_class_mass.values())
    if allocated > lander_capacity:
        alerts.append(
            {
                "code": "allocation_over_lander_capacity",
                "message": f"Slot classes allocate {allocated} g, more than the lander's "
                f"payload capacity of {lander_capacity} g.",
            }
        )
    if total_mass > lander_capacity:
        alerts.append(
            {
                "code": "manifest_over_lander_capacity",
                "message": f"{total_mass} g manifested exceeds the lander's payload capacity "
                f"of {lander_capacity} g.",
            }
        )
    rejected = [
        line["reference"] for line in lines if line["review_status"] == ReviewStatus.REJECTED
    ]
    if rejected:
        alerts.append(
            {
                "code": "rejected_payload_manifested",
                "message": "Rejected payloads still on confirmed bookings (to offload): "
                + ", ".join(rejected),
            }
        )

    review_counts = Counter(line["review_status"] for line in lines)
    export_counts = Counter(line["export_classification"] or "undeclared" for line in lines)
    controlled = {
        ExportClassification.EAR_LISTED,
        ExportClassification.ITAR,
        ExportClassification.JP_FEFTA_LISTED,
    }
    return {
        "schema": SCHEMA_VERSION,
        "mission": {
            "code": mission.code,
            "name": mission.name,
            "name_ja": mission.name_ja,
            "destination": mission.destination,
            "landing_site": mission.landing_site or "",
            "launch_window_start": mission.launch_window_start.isoformat(),
            "launch_window_end": mission.launch_window_end.isoformat(),
            "booking_cutoff": mission.booking_cutoff.isoformat(),
        },
        "lander": {"name": mission.lander.name, "payload_capacity_g": lander_capacity},
        "classes": class_totals,
        "totals": {
            "lines": len(lines),
            "mass_g": total_mass,
            "units": sum(per_class_units.values()),
            "lander_capacity_g": lander_capacity,
            "allocated_g": allocated,
            "remaining_g": lander_capacity - total_mass,
            "cleared": sum(1 for line in lines if line["cleared"]),
            "under_review": sum(
                1
                for line in lines
                if not line["cleared"] and line["review_status"] != ReviewStatus.REJECTED
            ),
            "rejected": len(rejected),
            "hazardous": sum(1 for line in lines if line["hazards"]),
            "export_controlled": sum(
                1 for line in lines if line["export_classification"] in controlled
            ),
            "by_review_status": dict(sorted(review_counts.items())),
            "by_export_classification": dict(sorted(export_counts.items())),
            "alerts": len(alerts),
        },
        "alerts": alerts,
        "lines": lines,
    }


def manifest_build(
    *, mission_id: int, trigger: str, now: datetime | None = None, frozen: bool = False
) -> ManifestVersion | None:
    """Build the mission's manifest and store it as a new version if it differs from the
    latest (by digest); otherwise return None. ``frozen`` marks the version taken at the
    booking cutoff: it is written even when the content equals the latest unfrozen version,
    but not twice. Runs under the mission's row lock, so two builds never race for a number.

    Idempotent: replaying it for an unchanged state writes nothing. A new version queues its
    PDF rendering (then its delivery) in the same transaction. Raises ``Mission.DoesNotExist``.
    """
    now = now or timezone.now()
    with transaction.atomic():
        mission = mission_qs_for_update().select_related("lander").get(pk=mission_id)
        content = manifest_content(mission)
        digest = manifest_digest(content)
        latest = (
            ManifestVersion.objects.filter(mission_id=mission_id)
            .order_by("-number")
            .values("number", "digest", "frozen")
            .first()
        )
        if latest is not None and latest["digest"] == digest and (latest["frozen"] or not frozen):
            return None
        version = ManifestVersion.objects.create(
            mission=mission,
            number=(latest["number"] if latest else 0) + 1,
            content=content,
            digest=digest,
            trigger=trigger[:200],
            frozen=frozen,
            created_at=now,
        )
        outbox_write(
            topic=RENDER_TOPIC,
            payload={"version_id": version.pk},
            dedupe_key=f"{RENDER_TOPIC}:{version.pk}",
        )
    for alert in content["alerts"]:
        logger.error(
            "manifest %s v%s: %s",
            mission.code,
            version.number,
            alert["message"],
            extra={"mission": mission.code, "alert": alert["code"]},
        )
    logger.info("manifest %s v%s built (%s)", mission.code, version.number, trigger)
    return version


# --- debounced rebuilds -----------------------------------------------------------------


def _window_end(now: datetime) -> datetime:
    window = REBUILD_WINDOW.total_seconds()
    start = int(now.timestamp() // window) * window
    return datetime.fromtimestamp(start + window, tz=now.tzinfo or timezone.get_current_timezone())


def manifest_request_rebuild(
    *, mission_id: int, reason: str, immediate: bool = False, now: datetime | None = None
) -> OutboxMessage | None:
    """Ask for the mission's manifest to be rebuilt, in the caller's transaction: nothing is
    asked if the transaction rolls back, and nothing is lost if the broker is down.

    By default the rebuild runs when the current window closes (``REBUILD_WINDOW``), so a
    burst of changes yields one version; ``immediate`` (sales staff pressing "rebuild now")
    dispatches it on commit. Cheap: one INSERT, no lock on anything shared.
    """
    now = now or timezone.now()
    payload: dict[str, Any] = {"mission_id": mission_id, "reason": reason[:200]}
    if immediate:
        return outbox_write(topic=REBUILD_TOPIC, payload=payload)
    due = _window_end(now) + REBUILD_SLACK
    payload["due"] = due.isoformat()
    # A lease held by nobody until the window closes: the on-commit dispatch is not
    # registered and the sweep skips leased rows, so the row waits for its window.
    return OutboxMessage.objects.create(
        topic=REBUILD_TOPIC, payload=payload, created_at=now, locked_until=due
    )


def manifest_rebuild_for(booking: Booking, what: str) -> None:
    """``manifest_request_rebuild`` for a change to ``booking`` (the booking services'
    one-line hook)."""
    manifest_request_rebuild(
        mission_id=booking.slot_class.mission_id, reason=f"booking {booking.reference} {what}"
    )


def _superseded(message: OutboxMessage, mission_id: int) -> bool:
    """A newer request due no later than this one is still waiting, untouched: it will be
    processed after this one and read a state at least as recent, so this one may stop.
    (Claiming a row overwrites its lease, so the due time is read from the payload.)"""
    due = message.payload.get("due")
    if not due:
        return False
    return OutboxMessage.objects.filter(
        topic=REBUILD_TOPIC,
        payload__mission_id=mission_id,
        processed_at__isnull=True,
        attempts=0,
        pk__gt=message.pk,
        locked_until__lte=datetime.fromisoformat(due),
    ).exists()


@outbox_handler(REBUILD_TOPIC)
def handle_manifest_rebuild(message: OutboxMessage) -> None:
    mission_id = int(message.payload["mission_id"])
    if _superseded(message, mission_id):
        return
    manifest_build(mission_id=mission_id, trigger=str(message.payload.get("reason") or ""))


# --- the freeze at the booking cutoff --------------------------------------------------


def _frozen_already(mission_id: int, cutoff: datetime) -> bool:
    """Frozen at this cutoff, or (sales reopened after a slip, nothing changed since) the
    latest version is still a frozen one: freezing again would only repeat it."""
    latest = (
        ManifestVersion.objects.filter(mission_id=mission_id)
        .order_by("-number")
        .values("frozen")
        .first()
    )
    if latest is not None and latest["frozen"]:
        return True
    return ManifestVersion.objects.filter(
        mission_id=mission_id, frozen=True, created_at__gte=cutoff
    ).exists()


def manifests_freeze_due(*, now: datetime | None = None) -> list[int]:
    """The beat job at the booking cutoff: every mission still on sale past its cutoff has
    its sales closed (on sale → sales closed), and every mission on sale or with sales closed
    past its cutoff and not yet frozen gets a frozen version. Changes after the freeze (a
    hold confirmed after the cutoff) make ordinary versions, never a second freeze.

    Safe to run twice or concurrently: the second finds the frozen version (or, racing,
    the build finds it under the mission's lock). Returns the ids of the missions frozen."""
    from bookings.mission_ops import MISSION_CUTOFF_ACTOR, mission_set_status
    from bookings.services import Actor
    from marketplace.models import MissionStatus

    now = now or timezone.now()
    candidates = list(
        Mission.objects.filter(
            status__in=(MissionStatus.ON_SALE, MissionStatus.SALES_CLOSED),
            booking_cutoff__lte=now,
        )
        .order_by("pk")
        .values_list("pk", "booking_cutoff", "status")
    )
    frozen = []
    actor = Actor.system(MISSION_CUTOFF_ACTOR)
    for mission_id, cutoff, status in candidates:
        freeze = not _frozen_already(mission_id, cutoff)
        if not freeze and status != MissionStatus.ON_SALE:
            continue
        version = None
        with transaction.atomic():
            mission = mission_qs_for_update().get(pk=mission_id)
            if mission.status == MissionStatus.ON_SALE:
                mission_set_status(
                    mission_id=mission_id,
                    status=MissionStatus.SALES_CLOSED,
                    actor=actor,
                    reason="The booking cutoff has passed.",
                    now=now,
                )
            if freeze:
                version = manifest_build(
                    mission_id=mission_id, trigger="booking cutoff", now=now, frozen=True
                )
        if version is not None:
            frozen.append(mission_id)
    return frozen


# --- formats ----------------------------------------------------------------------------


def manifest_json(version: ManifestVersion) -> bytes:
    """The content with the version's own facts in front (indented: people read it too)."""
    document = {
        "version": version.number,
        "built_at": version.created_at.isoformat(),
        "frozen": version.frozen,
        "trigger": version.trigger,
        "digest": version.digest,
        **version.content,
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


CSV_COLUMNS = (
    ("reference", "Reference"),
    ("waybill", "Waybill"),
    ("slot_class", "Class"),
    ("position", "Position"),
    ("booking_status", "Booking status"),
    ("customer", "Customer"),
    ("end_customer", "End customer"),
    ("payload", "Payload"),
    ("mass_g", "Mass (g)"),
    ("quantity", "Quantity"),
    ("declared_mass_g", "Declared mass (g)"),
    ("length_mm", "Length (mm)"),
    ("width_mm", "Width (mm)"),
    ("height_mm", "Height (mm)"),
    ("power_w", "Power (W)"),
    ("data_kbps", "Data (kbps)"),
    ("hazards", "Hazards"),
    ("export_classification", "Export class"),
    ("review_status", "Review status"),
    ("cleared", "Cleared to fly"),
)

# A cell a spreadsheet would read as a formula (a customer typed the payload name).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = "; ".join(str(item) for item in value)
    text = str(value)
    if text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def manifest_csv(version: ManifestVersion) -> bytes:
    """One row per line under a header; UTF-8 with a byte-order mark, which is what makes
    Excel read Japanese names correctly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([title for _, title in CSV_COLUMNS])
    for line in version.content["lines"]:
        dims = line.get("dimensions_mm") or [None, None, None]
        values = {**line, "length_mm": dims[0], "width_mm": dims[1], "height_mm": dims[2]}
        writer.writerow([_csv_cell(values.get(key)) for key, _ in CSV_COLUMNS])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def manifest_filename(version: ManifestVersion, extension: str) -> str:
    code = version.content.get("mission", {}).get("code", str(version.mission_id))
    return f"manifest-{code}-v{version.number}.{extension}"


# --- diff ------------------------------------------------------------------------------


def manifest_diff(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """What changed between two contents: lines added, removed and changed (by reference,
    each changed field as [old, new]), and totals that moved. Against no previous version
    every line is added."""
    before = {line["reference"]: line for line in (previous or {}).get("lines", [])}
    after = {line["reference"]: line for line in current.get("lines", [])}
    added = [line for ref, line in after.items() if ref not in before]
    removed = [line for ref, line in before.items() if ref not in after]
    changed = []
    for ref, line in after.items():
        old = before.get(ref)
        if old is None:
            continue
        fields = {
            key: [old.get(key), line.get(key)]
            for key in sorted(set(old) | set(line))
            if old.get(key) != line.get(key)
        }
        if fields:
            changed.append({"reference": ref, "fields": fields})

    totals = []
    old_totals = (previous or {}).get("totals", {})
    for key, value in current.get("totals", {}).items():
        if old_totals.get(key) != value:
            totals.append({"name": key, "old": old_totals.get(key), "new": value})
    old_classes = {c["id"]: c for c in (previous or {}).get("classes", [])}
    for cls in current.get("classes", []):
        old_cls = old_classes.get(cls["id"], {})
        for key in ("capacity_g", "manifested_g", "manifested_units", "lines"):
            if old_cls.get(key) != cls.get(key):
                totals.append(
                    {"name": f"{cls['name']}: {key}", "old": old_cls.get(key), "new": cls[key]}
                )
    old_alerts = {a["message"] for a in (previous or {}).get("alerts", [])}
    new_alerts = {a["message"] for a in current.get("alerts", [])}
    return {
        "added": added,
        "removed": removed,
        "changed": changed,
        "totals": totals,
        "alerts_raised": sorted(new_alerts - old_alerts),
        "alerts_cleared": sorted(old_alerts - new_alerts),
        "first": previous is None,
    }


def manifest_previous(version: ManifestVersion) -> ManifestVersion | None:
    return (
        ManifestVersion.objects.filter(mission_id=version.mission_id, number__lt=version.number)
        .order_by("-number")
        .first()
    )


# --- rendering and delivery (workers) -----------------------------------------------------


@outbox_handler(RENDER_TOPIC)
def handle_manifest_render(message: OutboxMessage) -> None:
    """Render and store the PDF once, then queue the delivery. A missing font raises
    ``ManifestFontMissing``: the row keeps the error and the sweep retries it."""
    from bookings.manifest_pdf import manifest_pdf

    version = ManifestVersion.objects.get(pk=message.payload["version_id"])
    if not version.pdf:
        data = manifest_pdf(version)
        name = version.pdf.storage.save(
            f"manifests/{manifest_filename(version, 'pdf')}", ContentFile(data)
        )
        ManifestVersion.objects.filter(pk=version.pk, pdf="").update(pdf=name)
    with transaction.atomic():
        outbox_write(
            topic=DELIVER_TOPIC,
            payload={"version_id": version.pk},
            dedupe_key=f"{DELIVER_TOPIC}:{version.pk}",
        )


def manifest_email(version: ManifestVersion, recipient: str) -> EmailMessage:
    previous = manifest_previous(version)
    diff = manifest_diff(previous.content if previous else None, version.content)
    content = version.content
    with translation.override("en"):
        body = render_to_string(
            "manifests/email/delivery.txt",
            {
                "version": version,
                "content": content,
                "diff": diff,
                "previous": previous,
                "site_url": settings.SITE_URL,
            },
        )
    mission = content["mission"]
    subject = f"[Moonslot] Manifest {mission['code']} v{version.number}"
    if version.frozen:
        subject += " (frozen at the booking cutoff)"
    if content["alerts"]:
        subject += " — ALERTS"
    message = EmailMessage(
        subject=subject,
        body=body,
        to=[recipient],
        headers={"X-Moonslot-Manifest": f"{mission['code']}/v{version.number}"},
    )
    message.attach(manifest_filename(version, "json"), manifest_json(version), "application/json")
    message.attach(manifest_filename(version, "csv"), manifest_csv(version), "text/csv")
    with version.pdf.open("rb") as pdf:
        message.attach(manifest_filename(version, "pdf"), pdf.read(), "application/pdf")
    return message


@outbox_handler(DELIVER_TOPIC)
def handle_manifest_deliver(message: OutboxMessage) -> None:
    """E-mail the version to each contact who receives manifests and record it. Each
    recipient is recorded once (unique per version); a retry skips those recorded, so a
    crash between sending and recording can at worst send one contact the same version
    twice, never lose it."""
    version = ManifestVersion.objects.get(pk=message.payload["version_id"])
    recipients = list(
        MissionContact.objects.filter(mission_id=version.mission_id, receives_manifests=True)
        .order_by("email")
        .values_list("email", flat=True)
    )
    done = set(ManifestDelivery.objects.filter(version=version).values_list("recipient", flat=True))
    for recipient in recipients:
        if recipient in done:
            continue
        manifest_email(version, recipient).send()
        ManifestDelivery.objects.get_or_create(
            version=version, recipient=recipient, defaults={"sent_at": timezone.now()}
        )
