"""Catalogue services: class allocations within the lander, and recorded schedule changes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from marketplace.exceptions import AllocationExceeded
from marketplace.models import Mission, ScheduleChange
from marketplace.services import mission_check_allocations, mission_reschedule
from tests.factories import LanderModelFactory, MissionFactory, SlotClassFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def mission() -> Mission:
    return MissionFactory.create(lander=LanderModelFactory.create(payload_capacity_g=300_000))


# --- allocations ------------------------------------------------------------------------
def test_classes_that_fill_the_lander_exactly_fit(mission: Mission) -> None:
    SlotClassFactory.create(mission=mission, capacity_g=200_000)
    SlotClassFactory.create(mission=mission, capacity_g=90_000)

    assert mission_check_allocations(mission_id=mission.pk, added=[10_000]) == 300_000


def test_one_gram_over_the_lander_is_refused_with_both_figures(mission: Mission) -> None:
    SlotClassFactory.create(mission=mission, capacity_g=200_000)

    with pytest.raises(AllocationExceeded) as error:
        mission_check_allocations(mission_id=mission.pk, added=[100_001])

    assert (error.value.allocated_g, error.value.lander_capacity_g) == (300_001, 300_000)


def test_a_changed_capacity_replaces_the_stored_one(mission: Mission) -> None:
    deck = SlotClassFactory.create(mission=mission, capacity_g=200_000)
    SlotClassFactory.create(mission=mission, capacity_g=100_000)

    assert mission_check_allocations(mission_id=mission.pk, changed={deck.pk: 150_000}) == 250_000
    with pytest.raises(AllocationExceeded):
        mission_check_allocations(mission_id=mission.pk, changed={deck.pk: 200_001})


def test_a_removed_class_frees_its_allocation(mission: Mission) -> None:
    deck = SlotClassFactory.create(mission=mission, capacity_g=200_000)
    side = SlotClassFactory.create(mission=mission, capacity_g=100_000)

    total = mission_check_allocations(
        mission_id=mission.pk, changed={deck.pk: 250_000}, removed=[side.pk], added=[50_000]
    )

    assert total == 300_000


def test_another_missions_classes_do_not_count(mission: Mission) -> None:
    SlotClassFactory.create(
        mission=MissionFactory.create(lander=mission.lander), capacity_g=300_000
    )

    assert mission_check_allocations(mission_id=mission.pk, added=[300_000]) == 300_000


def test_checking_allocations_changes_nothing(mission: Mission) -> None:
    deck = SlotClassFactory.create(mission=mission, capacity_g=200_000)

    mission_check_allocations(mission_id=mission.pk, changed={deck.pk: 10_000})

    deck.refresh_from_db()
    assert deck.capacity_g == 200_000


# --- reschedule -------------------------------------------------------------------------
@pytest.fixture
def scheduled() -> Mission:
    return MissionFactory.create(
        launch_window_start=datetime(2027, 9, 1, tzinfo=UTC),
        launch_window_end=datetime(2027, 11, 30, tzinfo=UTC),
        booking_cutoff=datetime(2027, 4, 1, tzinfo=UTC),
    )


def test_a_slip_is_recorded_with_the_old_window_and_moves_the_cutoff(scheduled: Mission) -> None:
    user = UserFactory.create()
    new_start, new_end = datetime(2028, 9, 1, tzinfo=UTC), datetime(2028, 11, 30, tzinfo=UTC)

    change = mission_reschedule(
        mission_id=scheduled.pk,
        new_window_start=new_start,
        new_window_end=new_end,
        reason="  Launch vehicle delay  ",
        announced_by=user,
    )

    scheduled.refresh_from_db()
    assert (scheduled.launch_window_start, scheduled.launch_window_end) == (new_start, new_end)
    assert scheduled.booking_cutoff == datetime(2027, 4, 1, tzinfo=UTC) + (
        new_start - datetime(2027, 9, 1, tzinfo=UTC)
    )
    assert (change.old_window_start, change.old_window_end) == (
        datetime(2027, 9, 1, tzinfo=UTC),
        datetime(2027, 11, 30, tzinfo=UTC),
    )
    assert (change.new_window_start, change.new_window_end) == (new_start, new_end)
    assert (change.reason, change.announced_by) == ("Launch vehicle delay", user)


def test_each_slip_adds_to_the_history_and_keeps_earlier_entries(scheduled: Mission) -> None:
    first = mission_reschedule(
        mission_id=scheduled.pk,
        new_window_start=datetime(2028, 1, 1, tzinfo=UTC),
        new_window_end=datetime(2028, 2, 1, tzinfo=UTC),
        reason="First slip",
    )
    mission_reschedule(
        mission_id=scheduled.pk,
        new_window_start=datetime(2028, 6, 1, tzinfo=UTC),
        new_window_end=datetime(2028, 7, 1, tzinfo=UTC),
        reason="Second slip",
    )

    history = ScheduleChange.objects.filter(mission=scheduled).order_by("announced_at", "pk")
    assert [c.reason for c in history] == ["First slip", "Second slip"]
    assert history[1].old_window_start == first.new_window_start


def test_a_given_cutoff_is_used_as_it_is(scheduled: Mission) -> None:
    mission_reschedule(
        mission_id=scheduled.pk,
        new_window_start=datetime(2028, 9, 1, tzinfo=UTC),
        new_window_end=datetime(2028, 11, 30, tzinfo=UTC),
        reason="Slip",
        new_booking_cutoff=datetime(2028, 6, 1, tzinfo=UTC),
    )

    scheduled.refresh_from_db()
    assert scheduled.booking_cutoff == datetime(2028, 6, 1, tzinfo=UTC)


def test_an_advance_moves_the_cutoff_only_as_far_as_it_must(scheduled: Mission) -> None:
    new_start = datetime(2027, 3, 1, tzinfo=UTC)  # before the old cutoff

    mission_reschedule(
        mission_id=scheduled.pk,
        new_window_start=new_start,
        new_window_end=new_start + timedelta(days=30),
        reason="Earlier ride",
    )

    scheduled.refresh_from_db()
    assert scheduled.booking_cutoff <= scheduled.launch_window_start == new_start


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (datetime(2028, 9, 1, tzinfo=UTC), datetime(2028, 11, 30, tzinfo=UTC), "   "),
        (datetime(2028, 11, 30, tzinfo=UTC), datetime(2028, 9, 1, tzinfo=UTC), "Slip"),
        (datetime(2027, 9, 1, tzinfo=UTC), datetime(2027, 11, 30, tzinfo=UTC), "Same window"),
    ],
)
def test_a_reschedule_without_reason_unordered_or_unchanged_is_refused(
    scheduled: Mission, start: datetime, end: datetime, reason: str
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the service's documented error)
        mission_reschedule(
            mission_id=scheduled.pk, new_window_start=start, new_window_end=end, reason=reason
        )

    scheduled.refresh_from_db()
    assert scheduled.launch_window_start == datetime(2027, 9, 1, tzinfo=UTC)
    assert not ScheduleChange.objects.exists()


# --- concurrency (PostgreSQL) -----------------------------------------------------------
def _wait_until_blocked_on_a_lock(deadline_s: float = 10.0) -> None:
    """Bounded polling of pg_stat_activity until another session waits on a lock."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    pytest.fail("the second editor never waited for the mission lock")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_editors_cannot_both_fit_a_class_into_the_same_free_kilograms(
    require_postgres: None,
) -> None:
    mission = MissionFactory.create(lander=LanderModelFactory.create(payload_capacity_g=300_000))
    first_checked, release_first = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def editor(name: str, *, hold: bool) -> None:
        try:
            with transaction.atomic():
                mission_check_allocations(mission_id=mission.pk, added=[200_000])
                SlotClassFactory.create(mission=mission, capacity_g=200_000)
                if hold:
                    first_checked.set()
                    release_first.wait(timeout=10)
            outcomes[name] = "saved"
        except AllocationExceeded:
            outcomes[name] = "refused"
        finally:
            connection.close()

    first = threading.Thread(target=editor, args=("first",), kwargs={"hold": True})
    second = threading.Thread(target=editor, args=("second",), kwargs={"hold": False})
    first.start()
    assert first_checked.wait(timeout=10)
    second.start()
    _wait_until_blocked_on_a_lock()
    release_first.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert outcomes == {"first": "saved", "second": "refused"}
    assert mission.slot_classes.count() == 1
