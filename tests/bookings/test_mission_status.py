"""Mission status transitions: the map, the audit trail on each booking, flown bookings and
customer notices when a mission ends, the freeze at the booking cutoff, the public page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Organisation
from bookings.manifests import manifests_freeze_due
from bookings.mission_ops import (
    BOOKING_FLOWN,
    MISSION_STATUS_CHANGED,
    MissionTransitionRefused,
    mission_set_status,
)
from bookings.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    ManifestVersion,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
)
from bookings.services import Actor
from marketplace.models import Channel, Mission, MissionStatus, SlotClass
from tests.bookings.test_manifests import bulk_confirmed
from tests.factories import MissionFactory, OrganisationFactory, SlotClassFactory, UserFactory

pytestmark = pytest.mark.django_db

STAFF = Actor.system("staff:ops@moonslot.example")


def move(mission: Mission, *statuses: str, reason: str = "") -> Mission:
    for status in statuses:
        mission = mission_set_status(
            mission_id=mission.pk, status=status, actor=STAFF, reason=reason
        )
    return mission


def held_booking(slot_class: SlotClass, organisation: Organisation) -> Booking:
    return Booking.objects.create(
        reference="HELD22",
        organisation=organisation,
        channel=Channel.ADMIN,
        slot_class=slot_class,
        mass_g=slot_class.min_mass_g,
        currency="JPY",
        price_amount=1,
        status=BookingStatus.HELD,
        hold_expires_at=timezone.now() + timedelta(days=3),
    )


def past_cutoff(status: str, *, now: Any, ago: timedelta = timedelta(minutes=1)) -> Mission:
    """A mission whose booking cutoff passed ``ago`` before ``now``, launching in a month."""
    return MissionFactory.create(
        status=status,
        booking_cutoff=now - ago,
        launch_window_start=now + timedelta(days=30),
        launch_window_end=now + timedelta(days=60),
    )


# --- the transition map ---------------------------------------------------------------


def test_a_mission_walks_its_lifecycle_to_completion() -> None:
    mission = MissionFactory.create(status=MissionStatus.PLANNED)

    mission = move(
        mission,
        MissionStatus.ON_SALE,
        MissionStatus.SALES_CLOSED,
        MissionStatus.INTEGRATION,
        MissionStatus.LAUNCHED,
        MissionStatus.LANDED,
        MissionStatus.COMPLETED,
    )

    mission.refresh_from_db()
    assert mission.status == MissionStatus.COMPLETED


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (MissionStatus.PLANNED, MissionStatus.LAUNCHED),
        (MissionStatus.ON_SALE, MissionStatus.FAILED),
        (MissionStatus.INTEGRATION, MissionStatus.ON_SALE),
        (MissionStatus.COMPLETED, MissionStatus.FAILED),
        (MissionStatus.FAILED, MissionStatus.LANDED),
    ],
)
def test_steps_outside_the_map_are_refused(start: str, target: str) -> None:
    mission = MissionFactory.create(status=start)

    with pytest.raises(MissionTransitionRefused) as refused:
        mission_set_status(mission_id=mission.pk, status=target, actor=STAFF)

    assert mission.code in refused.value.message
    assert str(MissionStatus(target).label) in refused.value.message
    mission.refresh_from_db()
    assert mission.status == start


def test_an_unknown_status_is_refused_in_words() -> None:
    mission = MissionFactory.create()

    with pytest.raises(MissionTransitionRefused, match="not a mission status"):
        mission_set_status(mission_id=mission.pk, status="exploded", actor=STAFF)


def test_setting_the_current_status_again_changes_nothing() -> None:
    deck = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.ON_SALE))
    bulk_confirmed(deck, [OrganisationFactory.create()], 2)
    move(deck.mission, MissionStatus.SALES_CLOSED)

    move(deck.mission, MissionStatus.SALES_CLOSED)

    assert BookingEvent.objects.filter(type=MISSION_STATUS_CHANGED).count() == 2


def test_going_back_on_sale_after_the_cutoff_is_refused() -> None:
    now = timezone.now()
    mission = past_cutoff(MissionStatus.SALES_CLOSED, now=now, ago=timedelta(days=1))

    with pytest.raises(MissionTransitionRefused, match="cutoff has passed"):
        move(mission, MissionStatus.ON_SALE)


def test_each_live_booking_records_the_change_with_who_and_why() -> None:
    deck = SlotClassFactory.create(mission=MissionFactory.create(status=MissionStatus.ON_SALE))
    organisation = OrganisationFactory.create()
    confirmed = bulk_confirmed(deck, [organisation], 2)
    held = held_booking(deck, organisation)

    move(deck.mission, MissionStatus.SALES_CLOSED, reason="Manifest review")

    events = BookingEvent.objects.filter(type=MISSION_STATUS_CHANGED).order_by("booking_id")
    assert [e.booking_id for e in events] == sorted([b.pk for b in confirmed] + [held.pk])
    assert {(e.from_status, e.to_status, e.actor, e.reason) for e in events} == {
        ("on_sale", "sales_closed", STAFF.label, "Manifest review")
    }


# --- a mission that ends ----------------------------------------------------------------


def test_a_failed_mission_flies_its_bookings_and_tells_each_customer_once(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission = MissionFactory.create(status=MissionStatus.LAUNCHED, code="F1")
    deck = SlotClassFactory.create(mission=mission)
    first = OrganisationFactory.create(notification_email="first@customer.example")
    second = OrganisationFactory.create(notification_email="second@customer.example")
    first_bookings = bulk_confirmed(deck, [first], 3)
    (second_booking,) = bulk_confirmed(deck, [second], 1)
    Payment.objects.create(
        booking=first_bookings[0],
        provider=PaymentProvider.BANK_TRANSFER,
        attempt=1,
        amount=400_000,
        currency="JPY",
        status=PaymentStatus.SUCCEEDED,
        idempotency_key="pay-1",
        succeeded_at=timezone.now(),
    )
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        move(mission, MissionStatus.FAILED, reason="Lost during descent")

    statuses = set(Booking.objects.filter(slot_class=deck).values_list("status", flat=True))
    assert statuses == {BookingStatus.FLOWN}
    assert BookingEvent.objects.filter(type=BOOKING_FLOWN).count() == 4
    assert not Refund.objects.exists()  # no silent refund
    assert sorted(m.to for m in mail.outbox) == [
        ["first@customer.example"],
        ["second@customer.example"],
    ]
    (to_first,) = [m for m in mail.outbox if m.to == ["first@customer.example"]]
    assert "F1" in to_first.subject
    assert "contract and the insurer" in to_first.body
    assert all(b.reference in to_first.body for b in first_bookings)
    assert second_booking.reference not in to_first.body
    assert "paid ¥400,000" in to_first.body
    assert "paid ¥0" in to_first.body


def test_a_completed_mission_flies_its_confirmed_bookings_only() -> None:
    mission = MissionFactory.create(status=MissionStatus.LANDED)
    deck = SlotClassFactory.create(mission=mission)
    organisation = OrganisationFactory.create()
    (confirmed,) = bulk_confirmed(deck, [organisation], 1)
    held = held_booking(deck, organisation)

    move(mission, MissionStatus.COMPLETED)

    confirmed.refresh_from_db()
    held.refresh_from_db()
    assert confirmed.status == BookingStatus.FLOWN
    assert held.status == BookingStatus.HELD
    (event,) = BookingEvent.objects.filter(type=BOOKING_FLOWN)
    assert (event.booking_id, event.from_status, event.to_status) == (
        confirmed.pk,
        "confirmed",
        "flown",
    )


def test_a_web_customer_is_told_in_their_own_language(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mission = MissionFactory.create(status=MissionStatus.INTEGRATION)
    deck = SlotClassFactory.create(mission=mission)
    user = UserFactory.create(preferred_language="ja")
    (booking,) = bulk_confirmed(deck, [OrganisationFactory.create()], 1)
    Booking.objects.filter(pk=booking.pk).update(channel=Channel.WEB, created_by=user)

    with django_capture_on_commit_callbacks(execute=True):
        move(mission, MissionStatus.LAUNCHED)

    (message,) = mail.outbox
    assert message.to == [user.email]
    assert "打ち上げ済み" in message.subject  # the status label, from the catalogue


# --- the booking cutoff -----------------------------------------------------------------


def test_the_cutoff_job_closes_sales_and_freezes_one_version() -> None:
    now = timezone.now()
    due = past_cutoff(MissionStatus.ON_SALE, now=now)
    later = MissionFactory.create(status=MissionStatus.ON_SALE)
    deck = SlotClassFactory.create(mission=due)
    bulk_confirmed(deck, [OrganisationFactory.create()], 3)
    SlotClassFactory.create(mission=later)

    assert manifests_freeze_due(now=now) == [due.pk]
    assert manifests_freeze_due(now=now) == []

    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == MissionStatus.SALES_CLOSED
    assert later.status == MissionStatus.ON_SALE
    (version,) = ManifestVersion.objects.filter(mission=due)
    assert version.frozen
    assert version.trigger == "booking cutoff"
    assert version.content["totals"]["lines"] == 3
    assert not ManifestVersion.objects.filter(mission=later).exists()
    # The close is on the audit trail of each booking, by the system.
    actors = set(
        BookingEvent.objects.filter(type=MISSION_STATUS_CHANGED).values_list("actor", flat=True)
    )
    assert actors == {"system:booking-cutoff"}


def test_the_freeze_is_written_even_when_the_latest_version_is_identical() -> None:
    now = timezone.now()
    mission = past_cutoff(MissionStatus.SALES_CLOSED, now=now)
    deck = SlotClassFactory.create(mission=mission)
    bulk_confirmed(deck, [OrganisationFactory.create()], 2)
    from bookings.manifests import manifest_build

    first = manifest_build(mission_id=mission.pk, trigger="before the cutoff")
    assert first is not None

    manifests_freeze_due(now=now)
    manifests_freeze_due(now=now)

    versions = list(ManifestVersion.objects.filter(mission=mission).order_by("number"))
    assert [(v.number, v.frozen) for v in versions] == [(1, False), (2, True)]
    assert versions[0].digest == versions[1].digest


def test_a_change_after_the_freeze_makes_an_ordinary_version_not_a_second_freeze() -> None:
    from bookings.manifests import manifest_build

    now = timezone.now()
    mission = past_cutoff(MissionStatus.ON_SALE, now=now)
    deck = SlotClassFactory.create(mission=mission)
    bulk_confirmed(deck, [OrganisationFactory.create()], 2)
    manifests_freeze_due(now=now)
    # A hold placed before the cutoff, confirmed (paid) after it.
    bulk_confirmed(deck, [OrganisationFactory.create()], 1)
    amended = manifest_build(mission_id=mission.pk, trigger="late confirmation")

    assert manifests_freeze_due(now=now + timedelta(minutes=5)) == []

    assert amended is not None
    versions = list(ManifestVersion.objects.filter(mission=mission).order_by("number"))
    assert [(v.number, v.frozen) for v in versions] == [(1, True), (2, False)]


def test_sales_reopened_after_a_slip_close_again_without_repeating_the_freeze(
    django_assert_max_num_queries: Callable[..., Any],
) -> None:
    now = timezone.now()
    mission = past_cutoff(MissionStatus.ON_SALE, now=now, ago=timedelta(days=2))
    deck = SlotClassFactory.create(mission=mission)
    bulk_confirmed(deck, [OrganisationFactory.create()], 2)
    manifests_freeze_due(now=now - timedelta(days=1))
    # A slip moved the cutoff on and sales reopened; nothing changed; the new cutoff passed.
    Mission.objects.filter(pk=mission.pk).update(booking_cutoff=now + timedelta(days=1))
    move(mission, MissionStatus.ON_SALE)
    Mission.objects.filter(pk=mission.pk).update(booking_cutoff=now - timedelta(minutes=1))

    assert manifests_freeze_due(now=now) == []
    # Once closed, the job does not rebuild the manifest minute after minute: it reads the
    # due missions and the latest version, and stops.
    with django_assert_max_num_queries(2):
        assert manifests_freeze_due(now=now) == []

    mission.refresh_from_db()
    assert mission.status == MissionStatus.SALES_CLOSED
    assert ManifestVersion.objects.filter(mission=mission).count() == 1


# --- the public status page ------------------------------------------------------------


def status_url(mission: Mission) -> str:
    return reverse("marketplace:mission-status", kwargs={"code": mission.code})


def test_the_status_page_shows_the_status_window_slips_and_timeline(client: Client) -> None:
    from marketplace.services import mission_reschedule

    mission = MissionFactory.create(status=MissionStatus.ON_SALE, name="Far side flight")
    deck = SlotClassFactory.create(mission=mission)
    bulk_confirmed(deck, [OrganisationFactory.create()], 2)
    mission_reschedule(
        mission_id=mission.pk,
        new_window_start=mission.launch_window_start + timedelta(days=365),
        new_window_end=mission.launch_window_end + timedelta(days=365),
        reason="Lander integration slipped",
    )
    move(mission, MissionStatus.SALES_CLOSED, MissionStatus.INTEGRATION)

    response = client.get(status_url(mission))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Far side flight" in page
    assert "Lander integration slipped" in page
    assert page.index('data-status="sales_closed"') < page.rindex('data-status="integration"')
    assert page.count('data-status="integration"') == 2  # the badge and the last change


def test_the_status_page_reads_in_japanese(client: Client) -> None:
    mission = MissionFactory.create(
        status=MissionStatus.LAUNCHED, name="Far side flight", name_ja="裏側ミッション"
    )

    response = client.get(status_url(mission), HTTP_ACCEPT_LANGUAGE="ja")

    page = response.content.decode()
    assert response.status_code == 200
    assert '<html lang="ja">' in page
    assert "裏側ミッション" in page
    assert "打ち上げ済み" in page
    assert "打ち上げ予定期間" in page  # "Launch window"
    assert "Far side flight" not in page


def test_the_status_page_of_an_unknown_mission_is_404(client: Client) -> None:
    assert client.get("/missions/NOPE/status/").status_code == 404


def test_sales_staff_change_the_status_through_the_admin_action() -> None:
    from tests.admin.helpers import admin_client_with_mfa, staff_user

    client = admin_client_with_mfa(staff_user(superuser=True, email="root@moonslot.example"))
    mission = MissionFactory.create(status=MissionStatus.INTEGRATION)
    url = reverse("admin:marketplace_mission_changelist")

    form = client.post(url, {"action": "mission_change_status", "_selected_action": [mission.pk]})
    refused = client.post(
        url,
        {
            "action": "mission_change_status",
            "_selected_action": [mission.pk],
            "apply": "1",
            "status": "completed",
        },
        follow=True,
    )
    done = client.post(
        url,
        {
            "action": "mission_change_status",
            "_selected_action": [mission.pk],
            "apply": "1",
            "status": "launched",
            "reason": "Lift-off 04:12 UTC",
        },
        follow=True,
    )

    assert form.status_code == 200
    assert "Change the mission status" in form.content.decode()
    assert "cannot become Completed" in refused.content.decode()
    assert "is now Launched" in done.content.decode()
    mission.refresh_from_db()
    assert mission.status == MissionStatus.LAUNCHED


def test_flown_bookings_keep_their_capacity_and_the_audit_agrees() -> None:
    from django.core.management import call_command

    from bookings.capacity_audit import capacity_drift
    from bookings.mission_ops import mission_set_status
    from bookings.services import Actor, booking_confirm, booking_hold
    from marketplace.models import Mission, MissionStatus, SlotClass
    from tests.factories import ResellerFactory, SlotClassFactory

    slot_class = SlotClassFactory.create()
    booking = booking_hold(
        slot_class_id=slot_class.pk,
        organisation=ResellerFactory.create(),
        channel="api",
        actor=Actor.system("test"),
        currency="JPY",
        mass_g=2000,
    )
    booking_confirm(booking_id=booking.pk, actor=Actor.system("test"))
    for status in (MissionStatus.SALES_CLOSED, MissionStatus.INTEGRATION, MissionStatus.LAUNCHED):
        mission_set_status(
            mission_id=slot_class.mission_id, status=status, actor=Actor.system("test")
        )
    mission_set_status(
        mission_id=slot_class.mission_id, status=MissionStatus.FAILED, actor=Actor.system("test")
    )
    booking.refresh_from_db()
    assert booking.status == "flown"
    assert SlotClass.objects.get(pk=slot_class.pk).taken_g == 2000
    assert Mission.objects.get(pk=slot_class.mission_id).status == "failed"
    assert capacity_drift() == []
    call_command("verify_capacity")
