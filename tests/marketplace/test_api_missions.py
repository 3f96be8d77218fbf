"""The public missions endpoints of the reseller API (shared/API.md, "Missions")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from django.db.models import Manager
from django.utils import timezone
from rest_framework import serializers

from marketplace.api.serializers import MissionSerializer
from marketplace.models import (
    LanderModel,
    Mission,
    MissionStatus,
    ScheduleChange,
    SlotClass,
)
from marketplace.selectors import mission_detail, mission_list
from tests.factories import LanderModelFactory, MissionFactory, SlotClassFactory
from tests.openapi_helpers import assert_matches_schema

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/missions/"
LIST_PATH = "/api/v1/missions/"
DETAIL_PATH = "/api/v1/missions/{code}/"

MISSION_KEYS = {
    "code",
    "name",
    "lander",
    "landing_site",
    "launch_window_start",
    "launch_window_end",
    "booking_cutoff",
    "status",
    "schedule_changes",
    "slot_classes",
}
SLOT_CLASS_KEYS = {
    "id",
    "name",
    "destination",
    "pricing",
    "prices",
    "capacity_g",
    "available_g",
    "min_mass_g",
    "max_mass_g",
    "mass_step_g",
    "max_dimensions_mm",
    "max_power_w",
    "channels",
    "unit_mass_g",
    "capacity_units",
    "available_units",
    "min_quantity",
    "max_quantity",
}
PER_UNIT_KEYS = {"unit_mass_g", "capacity_units", "available_units", "min_quantity", "max_quantity"}
SCHEDULE_CHANGE_KEYS = {"announced_at", "old_window_start", "new_window_start", "reason"}

# A page: count, missions (with the lander), slot classes (with availability and position),
# their prices, schedule changes. The same for 1 mission as for a full page.
LIST_QUERIES = 5
DETAIL_QUERIES = 4


def make_mission(**kwargs: Any) -> Mission:
    return cast(Mission, MissionFactory(**kwargs))


def make_slot_class(**kwargs: Any) -> SlotClass:
    return cast(SlotClass, SlotClassFactory(**kwargs))


def make_per_unit_class(**kwargs: Any) -> SlotClass:
    return SlotClassFactory.per_unit(**kwargs)


def make_lander() -> LanderModel:
    return cast(LanderModel, LanderModelFactory())


def detail_url(code: str) -> str:
    return f"/api/v1/missions/{code}/"


def is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass and is no integer here


def parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no time zone"
    return parsed


def schedule_change(mission: Mission, *, days: int, announced_days_ago: int) -> ScheduleChange:
    old_start, old_end = mission.launch_window_start, mission.launch_window_end
    delta = timedelta(days=days)
    return ScheduleChange.objects.create(
        mission=mission,
        old_window_start=old_start,
        old_window_end=old_end,
        new_window_start=old_start + delta,
        new_window_end=old_end + delta,
        reason=f"Slip of {days} days",
        announced_at=timezone.now() - timedelta(days=announced_days_ago),
    )


def mission_with_classes(**kwargs: Any) -> Mission:
    """A mission with three per-kg classes, one per-unit class and a schedule change."""
    mission = make_mission(**kwargs)
    for _ in range(3):
        SlotClassFactory(mission=mission, tiers={})
    SlotClassFactory.per_unit(mission=mission, tiers={})
    schedule_change(mission, days=30, announced_days_ago=1)
    return mission


def bulk_missions(count: int, *, lander: LanderModel, status: str = MissionStatus.ON_SALE) -> None:
    """Many bare missions in one INSERT, for the pagination tests."""
    start = timezone.now() + timedelta(days=400)
    Mission.objects.bulk_create(
        Mission(
            code=f"B{index}",
            name=f"Bulk mission {index}",
            lander=lander,
            status=status,
            launch_window_start=start + timedelta(days=index),
            launch_window_end=start + timedelta(days=index + 30),
            booking_cutoff=start + timedelta(days=index - 90),
        )
        for index in range(count)
    )


def render_with_drf_fields(serializer: serializers.BaseSerializer[Any], instance: Any) -> Any:
    """What DRF's generic machinery makes of the declared fields at every level: sources,
    nested serializers and each field's own ``to_representation``."""
    if isinstance(serializer, serializers.ListSerializer):
        items = instance.all() if isinstance(instance, Manager) else instance
        child = serializer.child
        assert isinstance(child, serializers.BaseSerializer)
        return [render_with_drf_fields(child, item) for item in items]
    assert isinstance(serializer, serializers.Serializer)
    rendered = {}
    for name, field in serializer.fields.items():
        attribute = field.get_attribute(instance)
        if isinstance(field, serializers.BaseSerializer):
            rendered[name] = render_with_drf_fields(field, attribute)
        else:
            rendered[name] = None if attribute is None else field.to_representation(attribute)
    return rendered


# --- shape ---------------------------------------------------------------------------------


def test_mission_carries_every_contract_key_with_its_type(api_client):
    mission = make_mission(code="M3", landing_site="Far side")
    per_kg = make_slot_class(
        mission=mission, prices={"JPY": 5_000_000_000, "USD": 1_200_000_00}, sold_on_web=False
    )
    per_unit = make_per_unit_class(mission=mission, capacity_units=500, unit_mass_g=20)
    change = schedule_change(mission, days=365, announced_days_ago=10)

    response = api_client.get(LIST_URL)

    page = assert_matches_schema(response, LIST_PATH, "get", 200)
    (item,) = page["results"]
    assert item.keys() >= MISSION_KEYS
    assert item["code"] == "M3"
    assert item["name"] == mission.name
    assert item["lander"] == mission.lander.name
    assert item["landing_site"] == "Far side"
    assert item["status"] == "on_sale"
    assert parse(item["launch_window_start"]) == mission.launch_window_start
    assert parse(item["launch_window_end"]) == mission.launch_window_end
    assert parse(item["booking_cutoff"]) == mission.booking_cutoff

    (change_item,) = item["schedule_changes"]
    assert change_item.keys() >= SCHEDULE_CHANGE_KEYS
    assert parse(change_item["announced_at"]) == change.announced_at
    assert parse(change_item["old_window_start"]) == change.old_window_start
    assert parse(change_item["new_window_start"]) == change.new_window_start
    assert change_item["reason"] == "Slip of 365 days"

    kg_item, unit_item = item["slot_classes"]
    for slot_item in (kg_item, unit_item):
        assert slot_item.keys() >= SLOT_CLASS_KEYS
        for key in ("capacity_g", "available_g", "min_mass_g", "max_mass_g", "mass_step_g"):
            assert is_int(slot_item[key]), key
        assert is_int(slot_item["max_power_w"])
        assert all(is_int(length) for length in slot_item["max_dimensions_mm"])

    assert kg_item["id"] == per_kg.pk
    assert kg_item["destination"] == "lunar_surface"
    assert kg_item["pricing"] == "per_kg"
    # Amounts past 2³¹ come through as exact integers.
    assert kg_item["prices"] == [
        {"amount": 5_000_000_000, "currency": "JPY"},
        {"amount": 120_000_000, "currency": "USD"},
    ]
    assert kg_item["capacity_g"] == 100_000
    assert kg_item["available_g"] == 100_000
    assert [kg_item["min_mass_g"], kg_item["max_mass_g"], kg_item["mass_step_g"]] == [
        500,
        50_000,
        100,
    ]
    assert kg_item["max_dimensions_mm"] == [400, 400, 400]
    assert kg_item["max_power_w"] == 20
    assert kg_item["channels"] == ["api", "admin"]
    assert {key: kg_item[key] for key in PER_UNIT_KEYS} == dict.fromkeys(PER_UNIT_KEYS)

    assert unit_item["id"] == per_unit.pk
    assert unit_item["pricing"] == "per_unit"
    assert unit_item["prices"] == [
        {"amount": 30_000, "currency": "JPY"},
        {"amount": 20_000, "currency": "USD"},
    ]
    assert unit_item["unit_mass_g"] == 20
    assert unit_item["capacity_units"] == 500
    assert unit_item["available_units"] == 500
    assert [unit_item["min_quantity"], unit_item["max_quantity"]] == [1, 10]
    assert unit_item["capacity_g"] == 10_000
    assert unit_item["max_dimensions_mm"] == [30, 30, 10]
    assert unit_item["channels"] == ["web", "api", "admin"]


def test_landing_site_not_yet_announced_is_null(api_client):
    MissionFactory(code="M9", landing_site=None)

    item = api_client.get(detail_url("M9")).json()

    assert "landing_site" in item
    assert item["landing_site"] is None


def test_schedule_changes_are_listed_oldest_first(api_client):
    mission = make_mission(code="M4")
    schedule_change(mission, days=200, announced_days_ago=5)
    schedule_change(mission, days=100, announced_days_ago=50)

    item = api_client.get(detail_url("M4")).json()

    assert [change["reason"] for change in item["schedule_changes"]] == [
        "Slip of 100 days",
        "Slip of 200 days",
    ]


def test_mission_without_classes_or_changes_has_empty_lists(api_client):
    MissionFactory(code="M5")

    item = api_client.get(detail_url("M5")).json()

    assert item["slot_classes"] == []
    assert item["schedule_changes"] == []


def test_fast_representation_is_what_the_declared_fields_render():
    """The hand-built dicts must be exactly what DRF would render from the declared (and
    documented) fields, so the OpenAPI document cannot drift from the payload."""
    mission = make_mission(code="M6", landing_site=None, name_ja="")
    SlotClassFactory(mission=mission, name_ja="")
    SlotClassFactory.per_unit(mission=mission)
    schedule_change(mission, days=30, announced_days_ago=3)
    MissionFactory(code="M7")

    for loaded in [*mission_list(), mission_detail(code="M6")]:
        fast = MissionSerializer(loaded).data
        generic = render_with_drf_fields(MissionSerializer(), loaded)
        assert fast == generic


# --- list: ordering, filter ----------------------------------------------------------------


def test_list_is_soonest_launch_first_without_completed_or_failed(api_client):
    now = timezone.now()
    for code, days, status in [
        ("LATE", 900, MissionStatus.PLANNED),
        ("SOON", 200, MissionStatus.ON_SALE),
        ("MID", 500, MissionStatus.LAUNCHED),
        ("DONE", 100, MissionStatus.COMPLETED),
        ("LOST", 150, MissionStatus.FAILED),
        ("SHUT", 300, MissionStatus.SALES_CLOSED),
    ]:
        MissionFactory(code=code, status=status, launch_window_start=now + timedelta(days=days))

    page = api_client.get(LIST_URL).json()

    assert [item["code"] for item in page["results"]] == ["SOON", "SHUT", "MID", "LATE"]
    assert page["count"] == 4


@pytest.mark.parametrize("status", ["completed", "failed", "planned", "on_sale"])
def test_status_filter_returns_only_missions_in_that_status(api_client, status):
    for index, mission_status in enumerate(MissionStatus.values):
        MissionFactory(code=f"S{index}", status=mission_status)

    page = api_client.get(LIST_URL, {"status": status}).json()

    assert [item["status"] for item in page["results"]] == [status]


def test_unknown_status_filter_is_400_invalid_naming_the_field(api_client):
    MissionFactory()

    response = api_client.get(LIST_URL, {"status": "cancelled"})

    body = assert_matches_schema(response, LIST_PATH, "get", 400)
    assert body["code"] == "invalid"
    assert list(body["fields"]) == ["status"]
    assert "cancelled" in body["fields"]["status"][0]
    assert body["detail"]


def test_empty_status_filter_is_no_filter(api_client):
    MissionFactory(status=MissionStatus.PLANNED)
    MissionFactory(status=MissionStatus.ON_SALE)

    page = api_client.get(LIST_URL, {"status": ""}).json()

    assert page["count"] == 2


# --- pagination ----------------------------------------------------------------------------


def test_list_pages_by_twenty_with_links(api_client):
    bulk_missions(21, lander=make_lander())

    first = api_client.get(LIST_URL).json()
    second = api_client.get(first["next"]).json()

    assert first["count"] == 21
    assert len(first["results"]) == 20
    assert first["previous"] is None
    assert "page=2" in first["next"]
    assert [item["code"] for item in second["results"]] == ["B20"]
    assert second["next"] is None
    assert second["previous"] is not None


def test_page_size_above_100_is_treated_as_100(api_client):
    bulk_missions(101, lander=make_lander())

    page = api_client.get(LIST_URL, {"page_size": 500}).json()
    rest = api_client.get(LIST_URL, {"page_size": 500, "page": 2}).json()

    assert page["count"] == 101
    assert len(page["results"]) == 100
    assert page["next"] is not None
    assert [item["code"] for item in rest["results"]] == ["B100"]


def test_page_past_the_end_is_404_not_found(api_client):
    bulk_missions(3, lander=make_lander())

    response = api_client.get(LIST_URL, {"page": 2})

    body = assert_matches_schema(response, LIST_PATH, "get", 404)
    assert set(body) == {"detail", "code"}
    assert body["code"] == "not_found"


def test_empty_catalogue_is_an_empty_first_page(api_client):
    response = api_client.get(LIST_URL)

    page = assert_matches_schema(response, LIST_PATH, "get", 200)
    assert page == {"count": 0, "next": None, "previous": None, "results": []}


# --- detail --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [MissionStatus.COMPLETED, MissionStatus.FAILED])
def test_detail_of_a_finished_mission_answers_200(api_client, status):
    mission_with_classes(code="M1", status=status)

    response = api_client.get(detail_url("M1"))

    item = assert_matches_schema(response, DETAIL_PATH, "get", 200)
    assert item["code"] == "M1"
    assert item["status"] == status
    assert len(item["slot_classes"]) == 4


def test_unknown_mission_code_is_404_not_found(api_client):
    MissionFactory(code="M3")

    response = api_client.get(detail_url("M404"))

    body = assert_matches_schema(response, DETAIL_PATH, "get", 404)
    assert set(body) == {"detail", "code"}
    assert body["code"] == "not_found"


@pytest.mark.parametrize("code", ["%00", "M3%00", "M" * 300])
def test_code_that_cannot_exist_is_404_not_a_server_error(api_client, code):
    MissionFactory(code="M3")

    response = api_client.get(detail_url(code))

    body = assert_matches_schema(response, DETAIL_PATH, "get", 404)
    assert body["code"] == "not_found"


# --- availability --------------------------------------------------------------------------


def test_availability_is_capacity_less_what_is_taken(api_client):
    mission = make_mission(code="M2")
    per_kg = make_slot_class(mission=mission, capacity_g=100_000)
    per_unit = make_per_unit_class(mission=mission, capacity_units=1000, unit_mass_g=10)
    # Held and confirmed bookings are counted on the class row by the booking services.
    SlotClass.objects.filter(pk=per_kg.pk).update(taken_g=62_500)
    SlotClass.objects.filter(pk=per_unit.pk).update(taken_units=130, taken_g=1_300)

    item = api_client.get(detail_url("M2")).json()
    listed = api_client.get(LIST_URL).json()["results"][0]

    kg_item, unit_item = item["slot_classes"]
    assert kg_item["capacity_g"] == 100_000
    assert kg_item["available_g"] == 37_500
    assert unit_item["available_units"] == 870
    assert unit_item["available_g"] == 8_700
    assert listed["slot_classes"] == item["slot_classes"]


def test_fully_taken_class_shows_nothing_available(api_client):
    mission = make_mission(code="M8")
    per_kg = make_slot_class(mission=mission, capacity_g=100_000)
    SlotClass.objects.filter(pk=per_kg.pk).update(taken_g=100_000)

    item = api_client.get(detail_url("M8")).json()

    assert item["slot_classes"][0]["available_g"] == 0


# --- queries -------------------------------------------------------------------------------


@pytest.mark.parametrize("missions", [1, 30])
def test_list_query_count_does_not_grow_with_missions(
    api_client, django_assert_num_queries, missions
):
    for _ in range(missions):
        mission_with_classes()

    with django_assert_num_queries(LIST_QUERIES):
        response = api_client.get(LIST_URL, {"page_size": 100})

    assert len(response.json()["results"]) == missions
    assert all(len(item["slot_classes"]) == 4 for item in response.json()["results"])


def test_detail_query_count_is_pinned(api_client, django_assert_num_queries):
    mission_with_classes(code="M3")

    with django_assert_num_queries(DETAIL_QUERIES):
        response = api_client.get(detail_url("M3"))

    assert response.status_code == 200
