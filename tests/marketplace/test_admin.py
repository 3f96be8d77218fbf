"""The catalogue admin, driven through its own pages the way a browser submits them."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import User
from marketplace.models import (
    LanderModel,
    Mission,
    Pricing,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
)
from tests.admin.helpers import admin_client_with_mfa
from tests.factories import (
    LanderModelFactory,
    LanderPositionFactory,
    MissionFactory,
    SlotClassFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


# --- a browser's view of an admin form -------------------------------------------------
class _FormFields(HTMLParser):
    """Collects what a browser would submit from the form whose id is ``form_id``."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, str] = {}
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {key: value or "" for key, value in attrs_list}
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside:
            return
        name = attrs.get("name", "")
        if "__prefix__" in name:
            return
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in {"submit", "button", "file"}:
                return
            if kind in {"checkbox", "radio"}:
                if "checked" in attrs:
                    self.data[name] = attrs.get("value") or "on"
                return
            self.data[name] = attrs.get("value", "")
        elif tag == "select" and name:
            self._select, self._first_option = name, None
        elif tag == "option" and self._select:
            value = attrs.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in attrs:
                self.data[self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select:
            self.data.setdefault(self._select, self._first_option or "")
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            # Browsers drop the one newline Django puts after <textarea>.
            self.data[self._textarea] += data.removeprefix("\n")


def form_data(client: Client, url: str, form_id: str) -> dict[str, str]:
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields(form_id)
    parser.feed(response.content.decode())
    assert parser.data, f"no form {form_id!r} on {url}"
    return parser.data


def add_inline_row(data: dict[str, str], prefix: str, values: dict[str, Any]) -> int:
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    for name, value in values.items():
        if value is None or value is False:
            continue
        data[f"{prefix}-{index}-{name}"] = "on" if value is True else str(value)
    data[f"{prefix}-TOTAL_FORMS"] = str(index + 1)
    return index


def per_kg_class(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "Lander deck",
        "name_ja": "ランダーデッキ",
        "position": "",
        "destination": "lunar_surface",
        "pricing": "per_kg",
        "sort_order": 0,
        "capacity_g": 100_000,
        "min_mass_g": 500,
        "max_mass_g": 50_000,
        "mass_step_g": 100,
        "max_length_mm": 400,
        "max_width_mm": 400,
        "max_height_mm": 400,
        "max_power_w": 20,
        "sold_on_web": True,
        "sold_on_api": True,
        "sold_on_admin": True,
        "hold_minutes_web": 20,
        "hold_minutes_api": 4320,
        "hold_minutes_admin": 10080,
    }
    return values | overrides


def capsule_class(**overrides: Any) -> dict[str, Any]:
    values = per_kg_class(
        name="Message capsule",
        pricing="per_unit",
        capacity_g="",
        min_mass_g="",
        max_mass_g="",
        mass_step_g="",
        unit_mass_g=1,
        capacity_units=5000,
        min_quantity=1,
        max_quantity=10,
        max_length_mm=30,
        max_width_mm=30,
        max_height_mm=5,
        max_power_w=0,
        inert_only=True,
    )
    return values | overrides


def set_datetime(data: dict[str, str], name: str, moment: datetime) -> None:
    data[f"{name}_0"] = f"{moment:%Y-%m-%d}"
    data[f"{name}_1"] = f"{moment:%H:%M:%S}"


def errors_of(response: Any) -> str:
    """Every error the page shows, for assertion messages."""
    context = response.context
    texts = [str(context["adminform"].form.errors)] if "adminform" in context else []
    for inline in context.get("inline_admin_formsets", []):
        texts.append(str(inline.formset.errors) + str(inline.formset.non_form_errors()))
    return " ".join(texts)


@pytest.fixture
def staff() -> User:
    return UserFactory.create(is_staff=True, is_superuser=True)


@pytest.fixture
def client(staff: User) -> Client:
    # The admin opens only after a second factor (accounts/mfa.py).
    return admin_client_with_mfa(staff)


@pytest.fixture
def lander() -> LanderModel:
    return LanderModelFactory.create(name="Mid-size lander", payload_capacity_g=300_000)


def mission_add_data(client: Client, lander: LanderModel, **overrides: Any) -> dict[str, str]:
    data = form_data(client, "/admin/marketplace/mission/add/", "mission_form")
    data.update(code="M9", name="Mission 9", name_ja="ミッション9", lander=str(lander.pk))
    data.update(status="on_sale", destination="lunar_surface", landing_site="Far side")
    set_datetime(data, "launch_window_start", datetime(2027, 9, 1, tzinfo=UTC))
    set_datetime(data, "launch_window_end", datetime(2027, 11, 30, tzinfo=UTC))
    set_datetime(data, "booking_cutoff", datetime(2027, 4, 1, tzinfo=UTC))
    data.update(overrides)
    return data


def change_url(obj: Any) -> str:
    meta = obj._meta
    return f"/admin/{meta.app_label}/{meta.model_name}/{obj.pk}/change/"


def mission_change_data(client: Client, mission: Mission) -> dict[str, str]:
    return form_data(client, change_url(mission), "mission_form")


def inline_index(data: dict[str, str], slot_class: SlotClass) -> int:
    return next(
        int(name.split("-")[1])
        for name, value in data.items()
        if name.startswith("slot_classes-") and name.endswith("-id") and value == str(slot_class.pk)
    )


# --- lists ------------------------------------------------------------------------------
def test_mission_list_shows_window_cutoff_status_and_sold_over_allocated(
    client: Client, lander: LanderModel, django_assert_max_num_queries: Any
) -> None:
    mission = MissionFactory.create(code="M3", lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    SlotClassFactory.create(mission=mission, capacity_g=50_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=12_500)
    for _ in range(5):
        SlotClassFactory.create(mission=MissionFactory.create(lander=lander))

    with django_assert_max_num_queries(8):
        response = client.get("/admin/marketplace/mission/")

    content = response.content.decode()
    assert response.status_code == 200
    assert "M3" in content
    assert f"{mission.launch_window_start:%Y-%m-%d} – {mission.launch_window_end:%Y-%m-%d}" in (
        content
    )
    assert "12.5 kg / 150 kg" in content


def test_mission_list_filters_by_status_and_searches_by_code(
    client: Client, lander: LanderModel
) -> None:
    MissionFactory.create(code="M3", lander=lander, status="on_sale")
    MissionFactory.create(code="M4", lander=lander, status="planned")

    by_status = client.get("/admin/marketplace/mission/?status__exact=planned")
    by_code = client.get("/admin/marketplace/mission/?q=M3")

    assert [m.code for m in by_status.context["cl"].result_list] == ["M4"]
    assert [m.code for m in by_code.context["cl"].result_list] == ["M3"]


# --- adding a mission with its classes --------------------------------------------------
def test_adding_a_mission_with_inline_classes_creates_them_and_derives_unit_figures(
    client: Client, lander: LanderModel
) -> None:
    deck = LanderPositionFactory.create(lander=lander, code="deck")
    data = mission_add_data(client, lander)
    add_inline_row(data, "slot_classes", per_kg_class(position=deck.pk))
    add_inline_row(data, "slot_classes", capsule_class())

    response = client.post("/admin/marketplace/mission/add/", data)

    assert response.status_code == 302, errors_of(response)
    mission = Mission.objects.get(code="M9")
    deck_class, capsule = mission.slot_classes.order_by("pk")
    assert (deck_class.capacity_g, deck_class.position_id) == (100_000, deck.pk)
    assert capsule.pricing == Pricing.PER_UNIT
    assert (capsule.capacity_g, capsule.mass_step_g, capsule.max_mass_g) == (5000, 1, 10)
    assert not mission.schedule_changes.exists()


def test_adding_a_mission_whose_classes_exceed_the_lander_names_both_figures_in_kg(
    client: Client, lander: LanderModel
) -> None:
    data = mission_add_data(client, lander)
    add_inline_row(data, "slot_classes", per_kg_class(capacity_g=250_000, max_mass_g=50_000))
    add_inline_row(data, "slot_classes", per_kg_class(name="Side", capacity_g=60_000))

    response = client.post("/admin/marketplace/mission/add/", data)

    assert response.status_code == 200
    assert "would allocate 310 kg in total" in errors_of(response)
    assert "payload capacity of 300 kg" in errors_of(response)
    assert not Mission.objects.filter(code="M9").exists()


def test_adding_a_mission_whose_classes_fill_the_lander_exactly_is_accepted(
    client: Client, lander: LanderModel
) -> None:
    data = mission_add_data(client, lander)
    add_inline_row(data, "slot_classes", per_kg_class(capacity_g=295_000))
    add_inline_row(data, "slot_classes", capsule_class())

    response = client.post("/admin/marketplace/mission/add/", data)

    assert response.status_code == 302, errors_of(response)
    assert Mission.objects.get(code="M9").slot_classes.count() == 2


def test_a_new_missions_class_on_another_landers_position_is_refused(
    client: Client, lander: LanderModel
) -> None:
    elsewhere = LanderPositionFactory.create(lander=LanderModelFactory.create(name="Small lander"))
    data = mission_add_data(client, lander)
    add_inline_row(data, "slot_classes", per_kg_class(position=elsewhere.pk))

    response = client.post("/admin/marketplace/mission/add/", data)

    assert response.status_code == 200
    assert "This position belongs to another lander model." in errors_of(response)
    assert not Mission.objects.filter(code="M9").exists()


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (
            {"launch_window_end": datetime(2027, 8, 1, tzinfo=UTC)},
            "The launch window must start before it ends.",
        ),
        (
            {"booking_cutoff": datetime(2027, 9, 2, tzinfo=UTC)},
            "The booking cutoff must be on or before the start of the launch window.",
        ),
    ],
)
def test_an_unordered_schedule_on_a_new_mission_is_a_form_error(
    client: Client, lander: LanderModel, dates: dict[str, datetime], message: str
) -> None:
    data = mission_add_data(client, lander)
    for name, moment in dates.items():
        set_datetime(data, name, moment)

    response = client.post("/admin/marketplace/mission/add/", data)

    assert response.status_code == 200
    assert message in errors_of(response)
    assert not Mission.objects.filter(code="M9").exists()


# --- changing a mission's classes -------------------------------------------------------
def test_growing_a_class_past_the_lander_on_the_mission_page_names_both_figures(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=200_000)
    SlotClassFactory.create(mission=mission, capacity_g=100_000)
    data = mission_change_data(client, mission)
    data[f"slot_classes-{inline_index(data, deck)}-capacity_g"] = "200500"

    response = client.post(change_url(mission), data)

    assert response.status_code == 200
    assert "would allocate 300.5 kg in total" in errors_of(response)
    assert "payload capacity of 300 kg" in errors_of(response)
    deck.refresh_from_db()
    assert deck.capacity_g == 200_000


def test_deleting_a_class_frees_its_allocation_for_another_on_the_same_save(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=200_000)
    side = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    data = mission_change_data(client, mission)
    data[f"slot_classes-{inline_index(data, deck)}-capacity_g"] = "300000"
    data[f"slot_classes-{inline_index(data, side)}-DELETE"] = "on"

    response = client.post(change_url(mission), data)

    assert response.status_code == 302, errors_of(response)
    assert list(mission.slot_classes.values_list("pk", "capacity_g")) == [(deck.pk, 300_000)]


def test_adding_a_class_on_the_mission_page_counts_the_stored_ones(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    SlotClassFactory.create(mission=mission, capacity_g=250_000)
    data = mission_change_data(client, mission)
    add_inline_row(data, "slot_classes", per_kg_class(capacity_g=60_000))

    response = client.post(change_url(mission), data)

    assert response.status_code == 200
    assert "would allocate 310 kg in total" in errors_of(response)
    assert mission.slot_classes.count() == 1


def test_capacity_below_what_is_booked_is_refused_on_the_mission_page(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=40_000)
    data = mission_change_data(client, mission)
    data[f"slot_classes-{inline_index(data, deck)}-capacity_g"] = "30000"
    data[f"slot_classes-{inline_index(data, deck)}-max_mass_g"] = "30000"

    response = client.post(change_url(mission), data)

    assert response.status_code == 200
    assert "40 kg are already booked; capacity cannot go lower." in errors_of(response)
    deck.refresh_from_db()
    assert (deck.capacity_g, deck.taken_g) == (100_000, 40_000)


def test_the_counters_show_on_the_mission_page_but_cannot_be_posted(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    deck = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    SlotClass.objects.filter(pk=deck.pk).update(taken_g=2_500)
    data = mission_change_data(client, mission)
    index = inline_index(data, deck)
    assert not any(name.endswith(("taken_g", "taken_units")) for name in data)
    data[f"slot_classes-{index}-taken_g"] = "0"
    data[f"slot_classes-{index}-name"] = "Deck (renamed)"

    page = client.get(change_url(mission)).content.decode()
    response = client.post(change_url(mission), data)

    assert "2.5 kg of 100 kg sold or held" in page
    assert response.status_code == 302, errors_of(response)
    deck.refresh_from_db()
    assert (deck.name, deck.taken_g) == ("Deck (renamed)", 2_500)


# --- schedule changes -------------------------------------------------------------------
def test_moving_the_launch_window_without_a_reason_is_refused(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    old_start = mission.launch_window_start
    data = mission_change_data(client, mission)
    set_datetime(data, "launch_window_start", datetime(2028, 9, 1, tzinfo=UTC))
    set_datetime(data, "launch_window_end", datetime(2028, 11, 30, tzinfo=UTC))

    response = client.post(change_url(mission), data)

    assert response.status_code == 200
    assert "The launch window changed: say why." in errors_of(response)
    mission.refresh_from_db()
    assert mission.launch_window_start == old_start
    assert not ScheduleChange.objects.exists()


def test_moving_the_launch_window_records_a_schedule_change_and_slips_the_cutoff(
    client: Client, lander: LanderModel, staff: User
) -> None:
    start = datetime(2027, 9, 1, tzinfo=UTC)
    mission = MissionFactory.create(
        lander=lander,
        launch_window_start=start,
        launch_window_end=datetime(2027, 11, 30, tzinfo=UTC),
        booking_cutoff=datetime(2027, 4, 1, tzinfo=UTC),
    )
    data = mission_change_data(client, mission)
    set_datetime(data, "launch_window_start", datetime(2028, 9, 1, tzinfo=UTC))
    set_datetime(data, "launch_window_end", datetime(2028, 11, 30, tzinfo=UTC))
    data["schedule_change_reason"] = "Launch vehicle manifest moved by a year."
    data["name"] = "Mission 3 — Far side"

    response = client.post(change_url(mission), data)

    assert response.status_code == 302, errors_of(response)
    mission.refresh_from_db()
    assert mission.name == "Mission 3 — Far side"
    assert mission.launch_window_start == datetime(2028, 9, 1, tzinfo=UTC)
    assert mission.launch_window_end == datetime(2028, 11, 30, tzinfo=UTC)
    slip = datetime(2028, 9, 1, tzinfo=UTC) - start
    assert mission.booking_cutoff == datetime(2027, 4, 1, tzinfo=UTC) + slip
    change = ScheduleChange.objects.get(mission=mission)
    assert (change.old_window_start, change.new_window_start) == (
        start,
        datetime(2028, 9, 1, tzinfo=UTC),
    )
    assert change.reason == "Launch vehicle manifest moved by a year."
    assert change.announced_by == staff


def test_a_cutoff_given_with_the_new_window_is_kept(client: Client, lander: LanderModel) -> None:
    mission = MissionFactory.create(
        lander=lander,
        launch_window_start=datetime(2027, 9, 1, tzinfo=UTC),
        launch_window_end=datetime(2027, 11, 30, tzinfo=UTC),
        booking_cutoff=datetime(2027, 4, 1, tzinfo=UTC),
    )
    data = mission_change_data(client, mission)
    set_datetime(data, "launch_window_start", datetime(2028, 9, 1, tzinfo=UTC))
    set_datetime(data, "launch_window_end", datetime(2028, 11, 30, tzinfo=UTC))
    set_datetime(data, "booking_cutoff", datetime(2028, 6, 1, tzinfo=UTC))
    data["schedule_change_reason"] = "Slip."

    response = client.post(change_url(mission), data)

    assert response.status_code == 302, errors_of(response)
    mission.refresh_from_db()
    assert mission.booking_cutoff == datetime(2028, 6, 1, tzinfo=UTC)
    assert ScheduleChange.objects.filter(mission=mission).count() == 1


def test_saving_a_mission_without_moving_its_window_records_no_change(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    window = (mission.launch_window_start, mission.launch_window_end)
    data = mission_change_data(client, mission)
    data["landing_site"] = "Near side"

    response = client.post(change_url(mission), data)

    assert response.status_code == 302, errors_of(response)
    mission.refresh_from_db()
    assert mission.landing_site == "Near side"
    assert (mission.launch_window_start, mission.launch_window_end) == window
    assert not ScheduleChange.objects.exists()


def test_schedule_history_is_shown_but_cannot_be_edited_or_deleted(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    change = ScheduleChange.objects.create(
        mission=mission,
        old_window_start=mission.launch_window_start,
        old_window_end=mission.launch_window_end,
        new_window_start=mission.launch_window_start,
        new_window_end=mission.launch_window_end,
        reason="Recorded slip",
    )
    data = mission_change_data(client, mission)
    editable = {name for name in data if name.startswith("schedule_changes-0-")}
    page = client.get(change_url(mission)).content.decode()
    data.update(
        {
            "schedule_changes-0-id": str(change.pk),
            "schedule_changes-0-reason": "Rewritten",
            "schedule_changes-0-DELETE": "on",
        }
    )

    response = client.post(change_url(mission), data)

    assert "Recorded slip" in page
    assert editable <= {"schedule_changes-0-id", "schedule_changes-0-mission"}
    assert response.status_code == 302, errors_of(response)
    change.refresh_from_db()
    assert change.reason == "Recorded slip"
    # The mission cannot be deleted either: its history would go with it.
    assert client.get(f"/admin/marketplace/mission/{mission.pk}/delete/").status_code == 403


def test_a_stored_missions_lander_is_read_only(client: Client, lander: LanderModel) -> None:
    mission = MissionFactory.create(lander=lander)
    other = LanderModelFactory.create(name="Small lander")
    data = mission_change_data(client, mission)
    assert "lander" not in data
    data["lander"] = str(other.pk)

    response = client.post(change_url(mission), data)

    assert response.status_code == 302, errors_of(response)
    mission.refresh_from_db()
    assert mission.lander_id == lander.pk


# --- a slot class on its own page -------------------------------------------------------
def slot_class_data(client: Client, slot_class: SlotClass) -> dict[str, str]:
    return form_data(client, change_url(slot_class), "slotclass_form")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_mass_g": "60000"}, "The maximum must not be below the minimum."),
        ({"min_mass_g": "550"}, "Must be a positive multiple of the mass step (100 g)."),
        ({"pricing": "per_unit"}, "Per-unit classes need this, and it must be at least 1."),
        (
            {"pricing": "per_unit", "unit_mass_g": "0", "mass_step_g": "0"},
            "Per-unit classes need this, and it must be at least 1.",
        ),
        ({"mass_step_g": "0"}, "The mass step must be at least 1 g."),
        ({"max_height_mm": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"hold_minutes_web": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"capacity_g": ""}, "Per-kg classes need a capacity in grams."),
        ({"max_mass_g": "150000"}, "The maximum per booking cannot exceed the class capacity."),
        ({"prices-0-amount": "-5"}, "Ensure this value is greater than or equal to 1."),
        ({"prices-1-currency": "JPY"}, "Please correct the duplicate data for currency"),
        ({"cancellation_tiers-0-refund_percent": "150"}, "less than or equal to 100"),
    ],
)
def test_invalid_slot_class_data_is_a_form_error_and_writes_nothing(
    client: Client, lander: LanderModel, changes: dict[str, str], message: str
) -> None:
    slot_class = SlotClassFactory.create(mission=MissionFactory.create(lander=lander))
    data = slot_class_data(client, slot_class)
    assert (data["prices-0-currency"], data["prices-1-currency"]) == ("JPY", "USD")
    data.update(changes)

    response = client.post(change_url(slot_class), data)

    assert response.status_code == 200
    assert message in errors_of(response)
    fresh = SlotClass.objects.get(pk=slot_class.pk)
    assert (fresh.pricing, fresh.min_mass_g, fresh.max_mass_g) == ("per_kg", 500, 50_000)
    assert sorted(fresh.prices.values_list("currency", "amount")) == [
        ("JPY", 180_000_000),
        ("USD", 1_200_000_00),
    ]


def test_capacity_below_what_is_booked_is_refused_on_the_class_page(
    client: Client, lander: LanderModel
) -> None:
    slot_class = SlotClassFactory.create(mission=MissionFactory.create(lander=lander))
    SlotClass.objects.filter(pk=slot_class.pk).update(taken_g=45_000)
    data = slot_class_data(client, slot_class)
    data.update(capacity_g="40000", max_mass_g="40000")

    response = client.post(change_url(slot_class), data)

    assert response.status_code == 200
    assert "45 kg are already booked; capacity cannot go lower." in errors_of(response)
    assert SlotClass.objects.get(pk=slot_class.pk).capacity_g == 100_000


def test_per_unit_capacity_below_the_units_booked_is_refused(
    client: Client, lander: LanderModel
) -> None:
    capsule = SlotClassFactory.per_unit(mission=MissionFactory.create(lander=lander))
    SlotClass.objects.filter(pk=capsule.pk).update(taken_units=600, taken_g=6_000)
    data = slot_class_data(client, capsule)
    data["capacity_units"] = "500"

    response = client.post(change_url(capsule), data)

    assert response.status_code == 200
    assert "600 units are already booked; capacity cannot go lower." in errors_of(response)
    assert SlotClass.objects.get(pk=capsule.pk).capacity_units == 1000


def test_growing_a_class_past_the_lander_on_its_own_page_names_both_figures(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    slot_class = SlotClassFactory.create(mission=mission, capacity_g=100_000)
    SlotClassFactory.create(mission=mission, capacity_g=150_000)
    data = slot_class_data(client, slot_class)
    data["capacity_g"] = "151000"

    response = client.post(change_url(slot_class), data)

    assert response.status_code == 200
    assert "would allocate 301 kg in total" in errors_of(response)
    assert "payload capacity of 300 kg" in errors_of(response)
    assert SlotClass.objects.get(pk=slot_class.pk).capacity_g == 100_000


def test_adding_a_class_on_its_own_page_is_checked_against_the_missions_classes(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(lander=lander)
    SlotClassFactory.create(mission=mission, capacity_g=280_000)
    data = form_data(client, "/admin/marketplace/slotclass/add/", "slotclass_form")
    values = per_kg_class(capacity_g=30_000, max_mass_g=30_000)
    data.update({name: "on" if value is True else str(value) for name, value in values.items()})
    data["mission"] = str(mission.pk)

    response = client.post("/admin/marketplace/slotclass/add/", data)

    assert response.status_code == 200
    assert "would allocate 310 kg in total" in errors_of(response)
    assert mission.slot_classes.count() == 1


def test_a_class_cannot_use_another_landers_position(client: Client, lander: LanderModel) -> None:
    slot_class = SlotClassFactory.create(mission=MissionFactory.create(lander=lander))
    elsewhere = LanderPositionFactory.create(lander=LanderModelFactory.create(name="Small lander"))
    data = slot_class_data(client, slot_class)
    data["position"] = str(elsewhere.pk)

    response = client.post(change_url(slot_class), data)

    assert response.status_code == 200
    assert "This position belongs to another lander model." in errors_of(response)
    assert SlotClass.objects.get(pk=slot_class.pk).position_id is None


def test_a_valid_price_change_on_the_class_page_is_saved(
    client: Client, lander: LanderModel
) -> None:
    slot_class = SlotClassFactory.create(mission=MissionFactory.create(lander=lander))
    data = slot_class_data(client, slot_class)
    data["prices-0-amount"] = "175000000"

    response = client.post(change_url(slot_class), data)

    assert response.status_code == 302, errors_of(response)
    assert SlotClassPrice.objects.get(slot_class=slot_class, currency="JPY").amount == 175_000_000


# --- lander models ----------------------------------------------------------------------
def test_a_lander_cannot_shrink_below_a_missions_allocations(
    client: Client, lander: LanderModel
) -> None:
    mission = MissionFactory.create(code="M3", lander=lander)
    SlotClassFactory.create(mission=mission, capacity_g=250_000)
    data = form_data(client, change_url(lander), "landermodel_form")
    data["payload_capacity_g"] = "200000"

    response = client.post(change_url(lander), data)

    assert response.status_code == 200
    assert "Mission M3 already allocates 250 kg" in errors_of(response)
    assert "you entered 200 kg" in errors_of(response)
    lander.refresh_from_db()
    assert lander.payload_capacity_g == 300_000


def lander_add_data(client: Client, **position: Any) -> dict[str, str]:
    data = form_data(client, "/admin/marketplace/landermodel/add/", "landermodel_form")
    data.update(name="Small lander", payload_capacity_g="100000")
    deck = {
        "code": "deck",
        "name": "Top deck",
        "max_length_mm": 500,
        "max_width_mm": 500,
        "max_height_mm": 400,
        "max_power_w": 60,
        "max_data_kbps": 128,
        "min_temperature_c": -20,
        "max_temperature_c": 50,
    }
    add_inline_row(data, "positions", deck | position)
    return data


def test_a_lander_with_its_positions_is_added_through_the_admin(client: Client) -> None:
    response = client.post("/admin/marketplace/landermodel/add/", lander_add_data(client))

    assert response.status_code == 302, errors_of(response)
    lander = LanderModel.objects.get(name="Small lander")
    assert list(lander.positions.values_list("code", flat=True)) == ["deck"]


@pytest.mark.parametrize(
    ("lander_fields", "position", "message"),
    [
        ({"payload_capacity_g": "0"}, {}, "Ensure this value is greater than or equal to 1."),
        ({}, {"max_width_mm": 0}, "Ensure this value is greater than or equal to 1."),
        (
            {},
            {"min_temperature_c": 60, "max_temperature_c": -20},
            "The maximum temperature must not be below the minimum.",
        ),
    ],
)
def test_invalid_lander_data_is_a_form_error(
    client: Client, lander_fields: dict[str, str], position: dict[str, Any], message: str
) -> None:
    data = lander_add_data(client, **position) | lander_fields

    response = client.post("/admin/marketplace/landermodel/add/", data)

    assert response.status_code == 200
    assert message in errors_of(response)
    assert not LanderModel.objects.filter(name="Small lander").exists()


def test_every_catalogue_admin_page_renders_with_the_demo_data(client: Client) -> None:
    call_command("load_demo_data", stdout=StringIO())
    m3 = Mission.objects.get(code="M3")
    objects = [m3, m3.lander, m3.slot_classes.get(name="Message capsule")]
    urls = ["/admin/marketplace/"]
    for obj in objects:
        base = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/"
        urls += [base, f"{base}add/", change_url(obj)]

    statuses = {url: client.get(url).status_code for url in urls}

    assert set(statuses.values()) == {200}, statuses
    page = client.get(change_url(m3)).content.decode()
    assert "slips by one year" in page  # the recorded schedule change
    assert "285 kg of the lander" in page  # its allocation against the lander


def test_a_stored_missions_status_cannot_be_edited_as_a_field(client: Client) -> None:
    mission = MissionFactory.create(status="on_sale")
    page = client.get(change_url(mission))
    assert page.status_code == 200
    assert 'name="status"' not in page.content.decode()
    data = mission_change_data(client, mission)
    data["status"] = "failed"
    response = client.post(change_url(mission), data)
    assert response.status_code in (200, 302)
    mission.refresh_from_db()
    assert mission.status == "on_sale"
