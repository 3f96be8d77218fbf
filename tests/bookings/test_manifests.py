"""Payload manifests: built from confirmed bookings, versioned by digest, debounced, rendered
as JSON, CSV and PDF, and delivered once per contact."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from itertools import cycle, islice
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organisation
from bookings.manifest_pdf import font_available
from bookings.manifests import (
    CSV_COLUMNS,
    REBUILD_TOPIC,
    manifest_build,
    manifest_csv,
    manifest_diff,
    manifest_json,
    manifest_request_rebuild,
    waybill_is_valid,
    waybill_number,
)
from bookings.models import (
    REFERENCE_ALPHABET,
    Booking,
    BookingStatus,
    ManifestDelivery,
    ManifestVersion,
    OutboxMessage,
    PayloadDeclaration,
    ReviewStatus,
)
from bookings.outbox import outbox_dispatch_pending
from bookings.services import Actor, booking_payload_update
from bookings.validation import PayloadInput
from marketplace.models import Channel, LanderPosition, Mission, MissionContact, SlotClass
from tests.conftest import missing
from tests.factories import (
    LanderModelFactory,
    LanderPositionFactory,
    MissionFactory,
    OrganisationFactory,
    ResellerFactory,
    SlotClassFactory,
)

pytestmark = pytest.mark.django_db

JAPANESE_CUSTOMER = "株式会社月面輸送"
JAPANESE_PAYLOAD = "月面ローバー試作機"


@pytest.fixture
def require_cjk_font() -> None:
    if not font_available():
        missing(
            "the manifest PDF needs fonts-ipafont-gothic (apt-get install fonts-ipafont-gothic)"
        )


def reference(index: int) -> str:
    """A six-character reference from the booking alphabet, distinct per index."""
    base = len(REFERENCE_ALPHABET)
    chars = []
    for _ in range(6):
        index, digit = divmod(index, base)
        chars.append(REFERENCE_ALPHABET[digit])
    return "".join(reversed(chars))


_serial = iter(range(1, 10_000_000))


def bulk_confirmed(
    slot_class: SlotClass,
    organisations: list[Organisation],
    count: int,
    *,
    mass_g: int | None = None,
    review_status: str = ReviewStatus.ACCEPTED,
    names: list[str] | None = None,
    keep_counters: bool = True,
) -> list[Booking]:
    """``count`` confirmed bookings with their payload declarations, in a few INSERTs, with
    the class's counters raised to match (unless ``keep_counters`` is False, to build a state
    the services would refuse)."""
    now = timezone.now()
    mass = mass_g or slot_class.min_mass_g
    quantity = (
        mass // slot_class.unit_mass_g
        if slot_class.is_per_unit and slot_class.unit_mass_g
        else None
    )
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                reference=reference(next(_serial)),
                organisation=organisation,
                channel=Channel.ADMIN,
                slot_class=slot_class,
                mass_g=mass,
                quantity=quantity,
                currency="JPY",
                price_amount=1_000_000,
                status=BookingStatus.CONFIRMED,
                confirmed_at=now,
                created_at=now,
            )
            for organisation in islice(cycle(organisations), count)
        ]
    )
    if connection.vendor != "postgresql":  # SQLite's bulk_create does not return ids
        refs = [b.reference for b in bookings]
        bookings = list(Booking.objects.filter(reference__in=refs).order_by("pk"))
    payload_names = names or ["Camera"]
    PayloadDeclaration.objects.bulk_create(
        [
            PayloadDeclaration(
                booking=booking,
                name=payload_names[index % len(payload_names)],
                mass_g=mass,
                length_mm=100,
                width_mm=100,
                height_mm=50 + index % 7,
                power_w=None if slot_class.inert_only else 5,
                hazards=[]
                if slot_class.inert_only
                else [{"type": "lithium_battery", "energy_wh": 20}],
                export_classification="EAR99",
                review_status=review_status,
            )
            for index, booking in enumerate(bookings)
        ]
    )
    if keep_counters:
        SlotClass.objects.filter(pk=slot_class.pk).update(
            taken_g=slot_class.taken_g + mass * count,
            taken_units=slot_class.taken_units + (quantity or 0) * count,
        )
        slot_class.refresh_from_db()
    return bookings


def run_due_rebuilds(capture: Callable[..., Any]) -> None:
    """Let the debounce window close: the rebuild rows come due and the outbox sweep runs
    them (and, after commit, the rendering and delivery they queue)."""
    past = timezone.now() - timedelta(minutes=5)
    OutboxMessage.objects.filter(topic=REBUILD_TOPIC, processed_at__isnull=True).update(
        locked_until=past, created_at=past
    )
    with capture(execute=True):
        outbox_dispatch_pending()


def busy_mission(count: int, code: str = "M9") -> tuple[Mission, list[Booking], dict[str, Any]]:
    """A mission with a per-kg deck and a per-unit capsule class, ``count`` confirmed
    bookings spread over both, Japanese and Latin names, and a reseller's end customer.
    Returns the mission, the bookings and the figures the test expects, computed here."""
    lander = LanderModelFactory.create(payload_capacity_g=300_000)
    position = LanderPositionFactory.create(lander=lander, code="deck-a")
    mission = MissionFactory.create(lander=lander, code=code, name="Far side", name_ja="裏側")
    deck = SlotClassFactory.create(
        mission=mission, name="Lander deck", capacity_g=200_000, position=position, sort_order=1
    )
    capsule = SlotClassFactory.per_unit(
        mission=mission, capacity_units=5_000, unit_mass_g=10, max_quantity=10, sort_order=2
    )
    japanese = Organisation.objects.filter(name=JAPANESE_CUSTOMER).first()
    japanese = japanese or OrganisationFactory.create(name=JAPANESE_CUSTOMER)
    acme = OrganisationFactory.create()
    reseller = ResellerFactory.create()
    on_deck = count // 2
    deck_bookings = bulk_confirmed(
        deck, [japanese, acme], on_deck, mass_g=500, names=[JAPANESE_PAYLOAD, "Camera"]
    )
    capsule_bookings = bulk_confirmed(capsule, [reseller], count - on_deck, mass_g=30)
    Booking.objects.filter(pk=capsule_bookings[0].pk).update(customer_organisation="末端顧客")
    expected = {
        "lines": count,
        "deck_g": 500 * on_deck,
        "capsule_g": 30 * (count - on_deck),
        "capsule_units": 3 * (count - on_deck),
    }
    return mission, [*deck_bookings, *capsule_bookings], expected


# --- waybill numbers --------------------------------------------------------------------


def test_waybill_is_prefix_serial_and_serial_mod_7() -> None:
    # 1,234,567 = 7 × 176,366 + 5
    assert waybill_number(1_234_567) == "871-12345675"
    assert waybill_number(7) == "871-00000070"
    # The serial is seven digits: the eleven-millionth booking wraps to serial 1.
    assert waybill_number(10_000_001) == "871-00000011"
    digits = waybill_number(42).replace("-", "")
    assert len(digits) == 11
    assert digits.isdigit()


def test_waybill_check_digit_catches_a_mistyped_digit() -> None:
    assert waybill_is_valid("871-12345675")
    assert not waybill_is_valid("871-12345674")
    assert not waybill_is_valid("871-12345575")
    assert not waybill_is_valid("870-12345675")
    assert not waybill_is_valid("871-1234567")


# --- building ---------------------------------------------------------------------------


def test_the_task_builds_one_version_with_exact_totals(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission, bookings, expected = busy_mission(200)
    held = SlotClassFactory.create(mission=mission, capacity_g=50_000, sort_order=3)
    Booking.objects.create(
        reference="HHHHHH",
        organisation=OrganisationFactory.create(),
        channel=Channel.WEB,
        slot_class=held,
        mass_g=1_000,
        currency="JPY",
        price_amount=1,
        status=BookingStatus.HELD,
        hold_expires_at=timezone.now() + timedelta(hours=1),
    )

    with django_capture_on_commit_callbacks(execute=True):
        manifest_request_rebuild(mission_id=mission.pk, reason="test")
    assert not ManifestVersion.objects.exists()  # waits for its window
    run_due_rebuilds(django_capture_on_commit_callbacks)

    (version,) = ManifestVersion.objects.filter(mission=mission)
    content = version.content
    assert version.number == 1
    assert version.trigger == "test"
    assert content["totals"]["lines"] == expected["lines"]
    assert content["totals"]["mass_g"] == expected["deck_g"] + expected["capsule_g"]
    assert content["totals"]["units"] == expected["capsule_units"]
    assert content["totals"]["lander_capacity_g"] == 300_000
    assert content["totals"]["allocated_g"] == 200_000 + 50_000 + 50_000
    deck, capsule, empty = content["classes"]
    assert (deck["manifested_g"], deck["capacity_g"], deck["lines"]) == (
        expected["deck_g"],
        200_000,
        100,
    )
    assert capsule["manifested_units"] == expected["capsule_units"]
    assert (empty["manifested_g"], empty["lines"]) == (0, 0)  # a hold is not manifested
    assert content["alerts"] == []
    assert {line["reference"] for line in content["lines"]} == {b.reference for b in bookings}
    assert all(waybill_is_valid(line["waybill"]) for line in content["lines"])
    assert "price" not in json.dumps(content)
    assert "JPY" not in json.dumps(content)
    # Deterministic order: class by class, then by reference.
    keys = [(line["slot_class_id"], line["reference"]) for line in content["lines"]]
    class_order = {c["id"]: i for i, c in enumerate(content["classes"])}
    assert keys == sorted(keys, key=lambda k: (class_order[k[0]], k[1]))
    end_customers = [line["end_customer"] for line in content["lines"] if line["end_customer"]]
    assert end_customers == ["末端顧客"]


def test_a_payload_under_review_is_not_shown_as_cleared() -> None:
    deck = SlotClassFactory.create()
    (cleared,) = bulk_confirmed(deck, [OrganisationFactory.create()], 1)
    (pending,) = bulk_confirmed(
        deck, [OrganisationFactory.create()], 1, review_status=ReviewStatus.SAFETY_REVIEW
    )

    version = manifest_build(mission_id=deck.mission_id, trigger="test")

    assert version is not None
    lines = {line["reference"]: line for line in version.content["lines"]}
    assert lines[cleared.reference]["cleared"] is True
    assert lines[pending.reference]["cleared"] is False
    assert lines[pending.reference]["review_status"] == "safety_review"
    assert version.content["totals"]["under_review"] == 1


def test_rebuilding_an_unchanged_state_writes_no_version() -> None:
    mission, _, _ = busy_mission(20)
    first = manifest_build(mission_id=mission.pk, trigger="first")

    assert first is not None
    assert manifest_build(mission_id=mission.pk, trigger="replay") is None
    assert ManifestVersion.objects.filter(mission=mission).count() == 1


def test_replaying_the_rebuild_task_writes_no_new_version(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission, _, _ = busy_mission(20)
    manifest_request_rebuild(mission_id=mission.pk, reason="first")
    run_due_rebuilds(django_capture_on_commit_callbacks)
    manifest_request_rebuild(mission_id=mission.pk, reason="again, nothing changed")
    run_due_rebuilds(django_capture_on_commit_callbacks)

    assert ManifestVersion.objects.filter(mission=mission).count() == 1


def test_changing_one_payload_makes_a_version_whose_diff_names_only_that_line(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission, bookings, _ = busy_mission(40)
    manifest_build(mission_id=mission.pk, trigger="first")
    target = bookings[2]  # its payload is the Japanese one

    booking_payload_update(
        booking_id=target.pk,
        payload=PayloadInput.from_mapping({"name": "Spectrometer"}),
        actor=Actor.system(),
    )
    run_due_rebuilds(django_capture_on_commit_callbacks)

    old, new = ManifestVersion.objects.filter(mission=mission).order_by("number")
    assert new.number == 2
    assert new.trigger == f"booking {target.reference} payload changed"
    diff = manifest_diff(old.content, new.content)
    assert diff["added"] == []
    assert diff["removed"] == []
    assert diff["changed"] == [
        {"reference": target.reference, "fields": {"payload": [JAPANESE_PAYLOAD, "Spectrometer"]}}
    ]
    assert diff["totals"] == []


def test_a_burst_of_changes_yields_one_version(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission, bookings, _ = busy_mission(40)
    manifest_build(mission_id=mission.pk, trigger="first")
    changed = bookings[:10]

    with django_capture_on_commit_callbacks(execute=True):
        for index, booking in enumerate(changed):
            booking_payload_update(
                booking_id=booking.pk,
                payload=PayloadInput.from_mapping({"name": f"Revised {index}"}),
                actor=Actor.system(),
            )
    assert ManifestVersion.objects.filter(mission=mission).count() == 1  # still waiting
    run_due_rebuilds(django_capture_on_commit_callbacks)

    versions = list(ManifestVersion.objects.filter(mission=mission).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    diff = manifest_diff(versions[0].content, versions[1].content)
    assert sorted(item["reference"] for item in diff["changed"]) == sorted(
        b.reference for b in changed
    )
    # The rows of the burst stepped aside for the last one; each was processed once.
    rows = OutboxMessage.objects.filter(topic=REBUILD_TOPIC)
    assert rows.count() == 10
    assert not rows.filter(processed_at__isnull=True).exists()


def test_a_cancelled_confirmed_booking_leaves_the_next_version(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from bookings.services import booking_cancel

    mission, bookings, _ = busy_mission(10)
    manifest_build(mission_id=mission.pk, trigger="first")

    booking_cancel(booking_id=bookings[0].pk, actor=Actor.system())
    run_due_rebuilds(django_capture_on_commit_callbacks)

    old, new = ManifestVersion.objects.filter(mission=mission).order_by("number")
    diff = manifest_diff(old.content, new.content)
    assert [line["reference"] for line in diff["removed"]] == [bookings[0].reference]
    assert {"name": "lines", "old": 10, "new": 9} in diff["totals"]


def test_over_allocation_is_flagged_in_the_content_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lander = LanderModelFactory.create(payload_capacity_g=100_000)
    mission = MissionFactory.create(lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=80_000)
    side = SlotClassFactory.create(mission=mission, capacity_g=40_000, max_mass_g=40_000)
    # More than the deck's capacity: a state only a bug (or a hand edit) could produce.
    bulk_confirmed(deck, [OrganisationFactory.create()], 9, mass_g=10_000, keep_counters=False)
    bulk_confirmed(side, [OrganisationFactory.create()], 1, mass_g=20_000)

    with caplog.at_level(logging.ERROR, logger="bookings.manifests"):
        version = manifest_build(mission_id=mission.pk, trigger="test")

    assert version is not None
    codes = [alert["code"] for alert in version.content["alerts"]]
    assert codes == [
        "class_over_capacity",
        "allocation_over_lander_capacity",
        "manifest_over_lander_capacity",
    ]
    assert version.content["totals"]["alerts"] == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert "120000 g" in errors[1].getMessage()


def test_build_queries_do_not_grow_with_the_bookings(
    django_assert_num_queries: Callable[..., Any],
) -> None:
    def queries_for(count: int) -> int:
        mission, _, _ = busy_mission(count, code=f"Q{count}")
        with CaptureQueriesContext(connection) as captured:
            assert manifest_build(mission_id=mission.pk, trigger="count") is not None
        return len(captured)

    assert queries_for(20) == queries_for(200)
    mission, _, _ = busy_mission(200, code="PIN")
    # Savepoint, the mission locked with its lander, classes, bookings with organisation
    # and payload, the latest version, the insert, and the render row (one INSERT … ON
    # CONFLICT DO NOTHING), then the outer release.
    with django_assert_num_queries(8):
        manifest_build(mission_id=mission.pk, trigger="pinned")


# --- formats ----------------------------------------------------------------------------


def test_the_csv_opens_with_a_header_and_one_row_per_line() -> None:
    mission, bookings, _ = busy_mission(200)
    version = manifest_build(mission_id=mission.pk, trigger="test")
    assert version is not None

    data = manifest_csv(version)

    assert data.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with the mark
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert list(rows[0]) == [title for _, title in CSV_COLUMNS]
    assert len(rows) == 200
    by_ref = {row["Reference"]: row for row in rows}
    first = bookings[0]
    assert by_ref[first.reference]["Customer"] == JAPANESE_CUSTOMER
    assert by_ref[first.reference]["Payload"] == JAPANESE_PAYLOAD
    assert by_ref[first.reference]["Mass (g)"] == "500"
    assert by_ref[first.reference]["Waybill"] == waybill_number(first.pk)
    assert by_ref[first.reference]["Cleared to fly"] == "yes"


def test_a_payload_name_is_never_a_spreadsheet_formula() -> None:
    deck = SlotClassFactory.create()
    bulk_confirmed(deck, [OrganisationFactory.create()], 1, names=['=HYPERLINK("x")'])
    version = manifest_build(mission_id=deck.mission_id, trigger="test")
    assert version is not None

    (row,) = csv.DictReader(io.StringIO(manifest_csv(version).decode("utf-8-sig")))

    assert row["Payload"] == '\'=HYPERLINK("x")'
    assert version.content["lines"][0]["payload"] == '=HYPERLINK("x")'  # data unchanged


def test_the_json_is_the_content_with_the_version_facts() -> None:
    mission, _, _ = busy_mission(10)
    version = manifest_build(mission_id=mission.pk, trigger="test")
    assert version is not None

    document = json.loads(manifest_json(version))

    assert document["version"] == 1
    assert document["digest"] == version.digest
    assert document["lines"] == version.content["lines"]


@pytest.mark.usefixtures("require_cjk_font")
def test_the_pdf_renders_every_reference_and_japanese_names_over_several_pages(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from pypdf import PdfReader

    mission, bookings, _ = busy_mission(200)
    manifest_request_rebuild(mission_id=mission.pk, reason="test")
    run_due_rebuilds(django_capture_on_commit_callbacks)
    version = ManifestVersion.objects.get(mission=mission)

    assert version.pdf  # rendered by the worker, stored on the version
    with version.pdf.open("rb") as stored:
        reader = PdfReader(io.BytesIO(stored.read()))
    text = "\n".join(page.extract_text() for page in reader.pages)

    assert len(reader.pages) > 1
    assert reader.pages[0].mediabox.width > reader.pages[0].mediabox.height  # landscape
    missing_refs = [b.reference for b in bookings if b.reference not in text]
    assert missing_refs == []
    assert JAPANESE_CUSTOMER in text
    assert JAPANESE_PAYLOAD in text
    assert "裏側" in text
    # The heading repeats on every page of lines.
    assert all("Waybill" in page.extract_text() for page in reader.pages[1:])


def test_without_the_font_rendering_fails_naming_the_package(settings: Any) -> None:
    from bookings.manifest_pdf import ManifestFontMissing, manifest_pdf

    settings.MOONSLOT_MANIFEST_FONT = "/nonexistent/ipagp.ttf"
    deck = SlotClassFactory.create()
    bulk_confirmed(deck, [OrganisationFactory.create()], 1)
    version = manifest_build(mission_id=deck.mission_id, trigger="test")
    assert version is not None

    with pytest.raises(ManifestFontMissing, match="fonts-ipafont-gothic"):
        manifest_pdf(version)


# --- delivery ---------------------------------------------------------------------------


@pytest.mark.usefixtures("require_cjk_font")
def test_each_version_is_delivered_once_per_contact_with_its_files(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission, bookings, _ = busy_mission(20)
    MissionContact.objects.create(mission=mission, name="Ops", email="ops@lander.example")
    MissionContact.objects.create(mission=mission, name="Flight", email="flight@lander.example")
    MissionContact.objects.create(
        mission=mission, name="Sales", email="sales@lander.example", receives_manifests=False
    )
    manifest_request_rebuild(mission_id=mission.pk, reason="first")
    run_due_rebuilds(django_capture_on_commit_callbacks)
    mail.outbox.clear()

    booking_payload_update(
        booking_id=bookings[0].pk,
        payload=PayloadInput.from_mapping({"power_w": 7}),
        actor=Actor.system(),
    )
    run_due_rebuilds(django_capture_on_commit_callbacks)

    version = ManifestVersion.objects.get(mission=mission, number=2)
    assert sorted(m.to[0] for m in mail.outbox) == ["flight@lander.example", "ops@lander.example"]
    message = mail.outbox[0]
    assert "Manifest M9 v2" in message.subject
    names = [attachment[0] for attachment in message.attachments]
    assert names == ["manifest-M9-v2.json", "manifest-M9-v2.csv", "manifest-M9-v2.pdf"]
    assert message.attachments[2][1][:5] == b"%PDF-"
    # A material change sends an accepted payload back to review (bookings.review).
    assert f"~ {bookings[0].reference}: cleared True → False; power_w 5 → 7" in message.body
    assert bookings[1].reference not in message.body
    assert set(
        ManifestDelivery.objects.filter(version=version).values_list("recipient", flat=True)
    ) == {"flight@lander.example", "ops@lander.example"}

    # A redelivery (the outbox row handed out again) sends nothing twice.
    from bookings.manifests import handle_manifest_deliver

    handle_manifest_deliver(OutboxMessage(payload={"version_id": version.pk}))
    assert len(mail.outbox) == 2
    assert ManifestDelivery.objects.filter(version=version).count() == 2


def test_positions_in_the_manifest_come_from_the_class() -> None:
    lander = LanderModelFactory.create()
    position = LanderPosition.objects.create(
        lander=lander, code="side-1", name="Side", max_length_mm=1, max_width_mm=1, max_height_mm=1
    )
    deck = SlotClassFactory.create(mission=MissionFactory.create(lander=lander), position=position)
    bulk_confirmed(deck, [OrganisationFactory.create()], 1)

    version = manifest_build(mission_id=deck.mission_id, trigger="test")

    assert version is not None
    assert version.content["lines"][0]["position"] == "side-1"
    assert version.content["classes"][0]["position"] == "side-1"


# --- the back office --------------------------------------------------------------------


@pytest.fixture
def admin_client() -> Any:
    from tests.admin.helpers import admin_client_with_mfa, staff_user

    return admin_client_with_mfa(staff_user(superuser=True, email="root@moonslot.example"))


def test_the_admin_lists_versions_and_shows_the_diff_and_downloads(admin_client: Any) -> None:
    from django.urls import reverse

    mission, bookings, _ = busy_mission(12)
    manifest_build(mission_id=mission.pk, trigger="first")
    booking_payload_update(
        booking_id=bookings[0].pk,
        payload=PayloadInput.from_mapping({"name": "Renamed payload"}),
        actor=Actor.system(),
    )
    version = manifest_build(mission_id=mission.pk, trigger="second")
    assert version is not None

    listing = admin_client.get(reverse("admin:bookings_manifestversion_changelist"))
    page = admin_client.get(
        reverse("admin:bookings_manifestversion_change", args=[version.pk])
    ).content.decode()
    download = reverse("admin:bookings_manifestversion_download", args=[version.pk, "csv"])
    csv_response = admin_client.get(download)
    pdf_response = admin_client.get(
        reverse("admin:bookings_manifestversion_download", args=[version.pk, "pdf"])
    )

    assert listing.status_code == 200
    assert "second" in listing.content.decode()
    assert "Compared with version 1." in page
    assert bookings[0].reference in page
    assert "Renamed payload" in page
    assert download in page
    assert csv_response.status_code == 200
    assert csv_response["Content-Disposition"] == 'attachment; filename="manifest-M9-v2.csv"'
    assert pdf_response.status_code == 404  # not rendered yet: never rendered in a request
    assert admin_client.get(download.replace("/csv/", "/xls/")).status_code == 404


def test_the_rebuild_action_asks_for_an_immediate_rebuild(
    admin_client: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    from django.urls import reverse

    mission, _, _ = busy_mission(5)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:marketplace_mission_changelist"),
            {"action": "mission_rebuild_manifest", "_selected_action": [mission.pk]},
        )

    assert response.status_code == 302
    (version,) = ManifestVersion.objects.filter(mission=mission)
    assert version.trigger == "rebuilt by root@moonslot.example"


# --- a real worker ---------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_cjk_font", "require_postgres")
def test_a_real_worker_builds_renders_and_delivers_after_commit(require_redis: str) -> None:
    from urllib.parse import urlparse, urlunparse

    from django.db import transaction

    from tests.worker import mail_files, running_worker, wait_for

    broker = urlunparse(urlparse(require_redis)._replace(path="/11"))
    mission, _, _ = busy_mission(30)
    MissionContact.objects.create(mission=mission, name="Ops", email="ops@lander.example")

    with running_worker(broker) as worker:
        with transaction.atomic():
            manifest_request_rebuild(mission_id=mission.pk, reason="worker", immediate=True)
            assert not ManifestVersion.objects.exists()  # nothing before commit
        delivered = wait_for(
            lambda: ManifestDelivery.objects.filter(version__mission=mission).first(),
            timeout=60,
            what=f"the manifest to be delivered (log: {worker['log']})",
        )
        (mail_file,) = wait_for(lambda: mail_files(worker["mail_dir"]), what="the e-mail file")  # type: ignore[arg-type]

    version = ManifestVersion.objects.get(mission=mission)
    assert delivered.recipient == "ops@lander.example"
    assert version.pdf
    assert "manifest-M9-v1.pdf" in mail_file
    assert "Payload manifest M9" in mail_file
    assert "first version of this manifest (30 lines)" in mail_file
