"""Catalogue admin for sales staff: lander models, missions with their classes, prices and
cancellation policies. Sums across classes and schedule changes go through
``marketplace.services``; the capacity counters are shown, never edited."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.forms import BaseModelForm
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.roles import CHANGE_MISSION_STATUS
from bookings.admin_operations import (
    MissionContactInline,
    mission_change_status,
    mission_rebuild_manifest,
)
from marketplace.forms_admin import (
    SLOT_CLASS_UPDATE_FIELDS,
    LanderModelAdminForm,
    LanderPositionForm,
    MissionAdminForm,
    SlotClassAdminForm,
    SlotClassForm,
    SlotClassInlineFormSet,
    format_kg,
)
from marketplace.models import (
    CancellationTier,
    LanderModel,
    LanderPosition,
    Mission,
    ScheduleChange,
    SlotClass,
    SlotClassPrice,
)
from marketplace.money import format_mass
from marketplace.services import mission_reschedule

_SLOT_CLASS_FIELDSETS: Any = (
    (
        None,
        {
            "fields": (
                ("name", "name_ja"),
                ("position", "destination"),
                ("pricing", "sort_order"),
            )
        },
    ),
    (
        _("Capacity and limits per booking"),
        {
            "fields": (
                ("capacity_g", "sold_display"),
                ("min_mass_g", "max_mass_g", "mass_step_g"),
                ("unit_mass_g", "capacity_units"),
                ("min_quantity", "max_quantity"),
            ),
            "description": _(
                "Per-unit classes: give the unit mass, units and the minimum and maximum "
                "units per booking; the masses are derived from them."
            ),
        },
    ),
    (
        _("Payload limits"),
        {
            "fields": (
                ("max_length_mm", "max_width_mm", "max_height_mm"),
                ("max_power_w", "inert_only"),
            )
        },
    ),
    (
        _("Sales channels and hold times"),
        {
            "fields": (
                ("sold_on_web", "hold_minutes_web"),
                ("sold_on_api", "hold_minutes_api"),
                ("sold_on_admin", "hold_minutes_admin"),
            )
        },
    ),
)


def _sold_text(slot_class: SlotClass) -> str:
    if slot_class.pk is None:
        return "—"
    text = _("%(taken)s of %(capacity)s sold or held") % {
        "taken": format_mass(slot_class.taken_g),
        "capacity": format_mass(slot_class.capacity_g),
    }
    if slot_class.capacity_units is not None:
        text += " " + _("(%(taken)s of %(units)s units)") % {
            "taken": slot_class.taken_units,
            "units": slot_class.capacity_units,
        }
    return text


class _SoldDisplayMixin:
    @admin.display(description=_("sold / held"))
    def sold_display(self, obj: SlotClass) -> str:
        return _sold_text(obj)


# --- Lander models ----------------------------------------------------------------------
class LanderPositionInline(admin.TabularInline):
    model = LanderPosition
    form = LanderPositionForm
    extra = 0


@admin.register(LanderModel)
class LanderModelAdmin(admin.ModelAdmin):
    form = LanderModelAdminForm
    inlines = [LanderPositionInline]
    list_display = ("name", "manufacturer", "capacity_display")
    search_fields = ("name", "manufacturer")

    @admin.display(description=_("payload capacity"), ordering="payload_capacity_g")
    def capacity_display(self, obj: LanderModel) -> str:
        return format_kg(obj.payload_capacity_g)


# --- Missions ---------------------------------------------------------------------------
class SlotClassInline(_SoldDisplayMixin, admin.StackedInline):
    model = SlotClass
    form = SlotClassForm
    formset = SlotClassInlineFormSet
    fieldsets = _SLOT_CLASS_FIELDSETS
    readonly_fields = ("sold_display",)
    extra = 0
    show_change_link = True
    verbose_name_plural = _("slot classes (prices and cancellation policy: open the class)")


class ScheduleChangeInline(admin.TabularInline):
    """The history of slips: written by ``mission_reschedule`` only, never edited here."""

    model = ScheduleChange
    fields = (
        "announced_at",
        "old_window_start",
        "old_window_end",
        "new_window_start",
        "new_window_end",
        "reason",
        "announced_by",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Mission)
class MissionAdmin(admin.ModelAdmin):
    form = MissionAdminForm
    inlines = [SlotClassInline, ScheduleChangeInline, MissionContactInline]
    # Status changes go through bookings.mission_ops (events, notices, flown bookings).
    actions = [mission_change_status, mission_rebuild_manifest]
    list_display = (
        "code",
        "name",
        "lander",
        "window_display",
        "booking_cutoff",
        "status",
        "sold_display",
    )
    list_filter = ("status", "lander")
    search_fields = ("code", "name", "name_ja")
    list_select_related = ("lander",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("code", "status"),
                    ("name", "name_ja"),
                    ("lander", "destination", "landing_site"),
                    "allocation_display",
                )
            },
        ),
        (
            _("Schedule"),
            {
                "fields": (
                    ("launch_window_start", "launch_window_end"),
                    "booking_cutoff",
                    "schedule_change_reason",
                )
            },
        ),
        (_("Description"), {"fields": ("description", "description_ja")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Mission]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                allocated_g=Sum("slot_classes__capacity_g"),
                sold_g=Sum("slot_classes__taken_g"),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Mission | None = None) -> Any:
        if obj is not None:
            return self.fieldsets
        # A new mission has no allocations yet and no schedule to change.
        only_on_change = {"allocation_display", "schedule_change_reason"}
        return [
            (
                title,
                {**options, "fields": [f for f in options["fields"] if f not in only_on_change]},
            )
            for title, options in self.fieldsets
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Mission | None = None) -> Any:
        # Positions and allocations are defined against the lander; a stored mission keeps it.
        # Its status changes only through mission_set_status (the "Change the mission
        # status" action), which checks the transition map and tells the customers.
        return ("lander", "status", "allocation_display") if obj is not None else ()

    def get_inline_instances(self, request: HttpRequest, obj: Mission | None = None) -> Any:
        inlines = super().get_inline_instances(request, obj)
        if obj is None:
            return [inline for inline in inlines if not isinstance(inline, ScheduleChangeInline)]
        return inlines

    def has_delete_permission(self, request: HttpRequest, obj: Mission | None = None) -> bool:
        # Deleting a mission would take its schedule history with it.
        if obj is not None and obj.schedule_changes.exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_change_status_permission(self, request: HttpRequest) -> bool:
        # Editing a mission's details (sales: schedule changes) is not moving its status.
        return request.user.has_perm(CHANGE_MISSION_STATUS)

    @admin.display(description=_("launch window"), ordering="launch_window_start")
    def window_display(self, obj: Mission) -> str:
        return f"{obj.launch_window_start:%Y-%m-%d} – {obj.launch_window_end:%Y-%m-%d}"

    @admin.display(description=_("allocation"))
    def allocation_display(self, obj: Mission) -> str:
        allocated = getattr(obj, "allocated_g", None) or 0
        capacity = obj.lander.payload_capacity_g
        return _(
            "%(allocated)s of the lander's %(capacity)s allocated to slot classes "
            "(%(free)s free to allocate); %(sold)s sold or held."
        ) % {
            "allocated": format_kg(allocated),
            "capacity": format_kg(capacity),
            "free": format_kg(max(capacity - allocated, 0)),
            "sold": format_kg(getattr(obj, "sold_g", None) or 0),
        }

    @admin.display(description=_("sold / allocated"))
    def sold_display(self, obj: Mission) -> str:
        sold = getattr(obj, "sold_g", None) or 0
        allocated = getattr(obj, "allocated_g", None) or 0
        return f"{format_kg(sold)} / {format_kg(allocated)}"

    def save_model(
        self, request: HttpRequest, obj: Mission, form: BaseModelForm, change: bool
    ) -> None:
        form = cast(MissionAdminForm, form)
        if not change:
            super().save_model(request, obj, form, change)
            return
        window_changed = form.window_changed()
        new_start, new_end = obj.launch_window_start, obj.launch_window_end
        new_cutoff = obj.booking_cutoff
        # Save the other fields against the stored schedule; the service moves it.
        obj.launch_window_start = form.initial["launch_window_start"]
        obj.launch_window_end = form.initial["launch_window_end"]
        if window_changed:
            obj.booking_cutoff = form.initial["booking_cutoff"]
        super().save_model(request, obj, form, change)
        if not window_changed:
            return
        schedule_change = mission_reschedule(
            mission_id=obj.pk,
            new_window_start=new_start,
            new_window_end=new_end,
            reason=form.cleaned_data["schedule_change_reason"],
            announced_by=request.user,  # type: ignore[arg-type]
            new_booking_cutoff=new_cutoff if "booking_cutoff" in form.changed_data else None,
        )
        obj.refresh_from_db(fields=["launch_window_start", "launch_window_end", "booking_cutoff"])
        # The change gave each live booking a re-accommodation offer (bookings.reaccommodation).
        offered = schedule_change.offers.count()
        self.message_user(
            request,
            ngettext(
                "Schedule change recorded: %(n)s booking was offered to stay, move or cancel.",
                "Schedule change recorded: %(n)s bookings were offered to stay, move or cancel.",
                offered,
            )
            % {"n": offered},
        )


# --- Slot classes -----------------------------------------------------------------------
class SlotClassPriceInline(admin.TabularInline):
    model = SlotClassPrice
    extra = 0
    min_num = 1
    fields = ("currency", "amount")


class CancellationTierInline(admin.TabularInline):
    model = CancellationTier
    extra = 0
    fields = ("days_before_launch", "refund_percent")


@admin.register(SlotClass)
class SlotClassAdmin(_SoldDisplayMixin, admin.ModelAdmin):
    form = SlotClassAdminForm
    inlines = [SlotClassPriceInline, CancellationTierInline]
    list_display = ("__str__", "pricing", "destination", "capacity_display", "sold_display")
    list_filter = ("pricing", "destination", "mission")
    search_fields = ("name", "name_ja", "mission__code")
    list_select_related = ("mission",)
    readonly_fields = ("sold_display",)

    def get_fieldsets(self, request: HttpRequest, obj: SlotClass | None = None) -> Any:
        first = _SLOT_CLASS_FIELDSETS[0]
        with_mission = (first[0], {"fields": ("mission", *first[1]["fields"])})
        # On the class's own page only: the mission page's inline keeps its fields.
        payment = (_("Payment and tax"), {"fields": (("payment_plan", "tax_treatment"),)})
        return (with_mission, *_SLOT_CLASS_FIELDSETS[1:], payment)

    def get_readonly_fields(self, request: HttpRequest, obj: SlotClass | None = None) -> Any:
        # A class with its bookings belongs to one mission for good.
        return ("sold_display", "mission") if obj is not None else ("sold_display",)

    @admin.display(description=_("capacity"), ordering="capacity_g")
    def capacity_display(self, obj: SlotClass) -> str:
        return format_mass(obj.capacity_g)

    def save_model(
        self, request: HttpRequest, obj: SlotClass, form: BaseModelForm, change: bool
    ) -> None:
        if change:
            obj.save(update_fields=SLOT_CLASS_UPDATE_FIELDS)
        else:
            obj.save()


# Payment plans have their own module; importing it registers their admin.
from marketplace import admin_plans  # noqa: E402, F401
