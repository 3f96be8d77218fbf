"""Admin forms for the catalogue.

The admin's change view runs inside ``transaction.atomic``, so the row locks these forms take
while validating (the mission through ``mission_check_allocations``, then the slot classes)
are held until the save commits: what was checked is what gets written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.forms.formsets import DELETION_FIELD_NAME
from django.utils.translation import gettext_lazy as _

from marketplace.exceptions import AllocationExceeded
from marketplace.locks import slot_class_qs_for_update
from marketplace.models import LanderModel, LanderPosition, Mission, Pricing, SlotClass
from marketplace.money import format_mass
from marketplace.services import mission_check_allocations

# The booking services own the counters; a form save must never write back a stale copy.
_COUNTER_FIELDS = frozenset({"taken_g", "taken_units"})
SLOT_CLASS_UPDATE_FIELDS = [
    field.name
    for field in SlotClass._meta.concrete_fields
    if not field.primary_key and field.name not in _COUNTER_FIELDS
]


def format_kg(mass_g: int) -> str:
    """Always in kilograms (sales compare allocations in kg): 0.25 kg, 300 kg, 1,000.5 kg."""
    kg, rest = divmod(mass_g, 1000)
    if rest == 0:
        return f"{kg:,} kg"
    return f"{kg:,}.{rest:03d}".rstrip("0") + " kg"


def allocation_error(*, allocated_g: int, lander_capacity_g: int) -> ValidationError:
    return ValidationError(
        _(
            "The slot classes would allocate %(allocated)s in total, more than the lander's "
            "payload capacity of %(capacity)s. Reduce a class's capacity or remove a class."
        ),
        code="allocation_exceeded",
        params={"allocated": format_kg(allocated_g), "capacity": format_kg(lander_capacity_g)},
    )


def _allocation_error_from(exc: AllocationExceeded) -> ValidationError:
    return allocation_error(allocated_g=exc.allocated_g, lander_capacity_g=exc.lander_capacity_g)


def lock_and_check_taken(instances: Iterable[SlotClass]) -> dict[int, dict[str, str]]:
    """Lock the stored classes among ``instances`` and compare their new capacities with the
    counters as they are now, not as they were when the page loaded: a booking may have
    taken more since. Returns field errors per class id. Lock order: call after the mission
    lock (``mission_check_allocations``)."""
    by_id = {instance.pk: instance for instance in instances if instance.pk is not None}
    if not by_id:
        return {}
    counters = (
        slot_class_qs_for_update().filter(pk__in=by_id).values_list("pk", "taken_g", "taken_units")
    )
    errors: dict[int, dict[str, str]] = {}
    for pk, taken_g, taken_units in counters:
        instance = by_id[pk]
        instance.taken_g, instance.taken_units = taken_g, taken_units
        if instance.pricing == Pricing.PER_UNIT and (instance.capacity_units or 0) < taken_units:
            errors.setdefault(pk, {})["capacity_units"] = str(
                _("%(taken)s units are already booked; capacity cannot go lower.")
                % {"taken": taken_units}
            )
        elif instance.capacity_g < taken_g:
            errors.setdefault(pk, {})["capacity_g"] = str(
                _("%(taken)s are already booked; capacity cannot go lower.")
                % {"taken": format_mass(taken_g)}
            )
    return errors


def require_positive(form: forms.BaseForm, names: Iterable[str]) -> None:
    """Say "at least 1" on the field itself rather than leave it to a CheckConstraint, whose
    message names the constraint instead of the field."""
    for name in names:
        field = form.fields.get(name)
        if isinstance(field, forms.IntegerField):
            field.min_value = 1
            field.validators.append(MinValueValidator(1))
            field.widget.attrs["min"] = 1


class SlotClassForm(forms.ModelForm):
    """One slot class. Per-unit classes derive their mass figures from the unit figures
    (``SlotClass.clean``), so those fields are optional here and the model fills them in."""

    class Meta:
        model = SlotClass
        fields = [
            name for name in SLOT_CLASS_UPDATE_FIELDS if SlotClass._meta.get_field(name).editable
        ]
        help_texts = {
            "capacity_g": _(
                "Per-kg classes: the mass this class may sell. Per-unit classes: leave it "
                "empty; it is units × unit mass."
            ),
            "min_mass_g": _("Per-kg classes only; per-unit classes derive it."),
            "max_mass_g": _("Per-kg classes only; per-unit classes derive it."),
            "mass_step_g": _("Per-kg classes only; per-unit classes use the unit mass."),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("capacity_g", "min_mass_g", "max_mass_g", "mass_step_g"):
            if name in self.fields:
                self.fields[name].required = False
        require_positive(
            self,
            [
                "capacity_g",
                "max_length_mm",
                "max_width_mm",
                "max_height_mm",
                "hold_minutes_web",
                "hold_minutes_api",
                "hold_minutes_admin",
            ],
        )

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if (
            cleaned.get("pricing") == Pricing.PER_KG
            and "capacity_g" in self.fields
            and cleaned.get("capacity_g") is None
            and "capacity_g" not in self.errors
        ):
            self.add_error("capacity_g", _("Per-kg classes need a capacity in grams."))
        return cleaned


class SlotClassAdminForm(SlotClassForm):
    """A slot class on its own page: its allocation is checked against its mission's other
    classes and the lander, under the mission's lock."""

    def _post_clean(self) -> None:
        # After the model's clean (as Django's own user creation form does), so a per-unit
        # class's capacity is already derived.
        super()._post_clean()  # type: ignore[misc]
        if self.errors or self.instance.mission_id is None:
            return
        instance = self.instance
        try:
            if instance.pk is None:
                mission_check_allocations(
                    mission_id=instance.mission_id, added=[instance.capacity_g]
                )
            else:
                mission_check_allocations(
                    mission_id=instance.mission_id, changed={instance.pk: instance.capacity_g}
                )
        except AllocationExceeded as exc:
            self.add_error(None, _allocation_error_from(exc))
            return
        for field, message in lock_and_check_taken([instance]).get(instance.pk, {}).items():
            self.add_error(field, message)


class SlotClassInlineFormSet(forms.BaseInlineFormSet):
    """A mission's classes edited together: their sum must fit the lander."""

    instance: Mission

    def _deleted(self, form: forms.ModelForm) -> bool:
        return self.can_delete and bool(form.cleaned_data.get(DELETION_FIELD_NAME))

    def _kept_forms(self) -> list[forms.ModelForm]:
        kept = []
        for form in self.forms:
            if self._deleted(form):
                continue
            if form.instance.pk is None and not form.has_changed():
                continue  # an untouched blank row
            kept.append(form)
        return kept

    def clean(self) -> None:
        super().clean()
        mission = self.instance
        kept = self._kept_forms()
        if mission.pk is None:
            self._check_positions(kept, lander_id=mission.lander_id)
        if any(self.errors) or mission.lander_id is None:
            return
        if mission.pk is None:
            # Nothing stored to lock yet: compare with the chosen lander directly.
            total = sum(form.instance.capacity_g for form in kept)
            capacity = mission.lander.payload_capacity_g
            if total > capacity:
                raise allocation_error(allocated_g=total, lander_capacity_g=capacity)
            return
        removed = [
            form.instance.pk
            for form in self.forms
            if form.instance.pk is not None and self._deleted(form)
        ]
        try:
            mission_check_allocations(
                mission_id=mission.pk,
                changed={f.instance.pk: f.instance.capacity_g for f in kept if f.instance.pk},
                added=[f.instance.capacity_g for f in kept if f.instance.pk is None],
                removed=removed,
            )
        except AllocationExceeded as exc:
            raise _allocation_error_from(exc) from exc
        errors = lock_and_check_taken(form.instance for form in kept)
        for form in kept:
            for field, message in errors.get(form.instance.pk, {}).items():
                form.add_error(field, message)

    @staticmethod
    def _check_positions(kept: list[forms.ModelForm], *, lander_id: int | None) -> None:
        # SlotClass.clean checks this once the class has a stored mission; a new mission's
        # classes are checked against the lander chosen on the same page.
        if lander_id is None:
            return
        for form in kept:
            position = form.cleaned_data.get("position")
            if position is not None and position.lander_id != lander_id:
                form.add_error("position", _("This position belongs to another lander model."))

    def save_existing(self, form: forms.ModelForm, obj: Any, commit: bool = True) -> Any:
        obj = form.save(commit=False)
        if commit:
            obj.save(update_fields=SLOT_CLASS_UPDATE_FIELDS)
        return obj


class MissionAdminForm(forms.ModelForm):
    """A mission. Moving the launch window of a stored mission is a schedule change: it
    needs a reason and is recorded by ``mission_reschedule`` rather than overwritten."""

    schedule_change_reason = forms.CharField(
        label=_("Reason for the schedule change"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_(
            "Required when you move the launch window. Recorded in the schedule history. If "
            "you leave the booking cutoff as it is, a slip moves it by the same amount."
        ),
    )

    class Meta:
        model = Mission
        fields = [
            "code",
            "status",
            "name",
            "name_ja",
            "lander",
            "destination",
            "landing_site",
            "launch_window_start",
            "launch_window_end",
            "booking_cutoff",
            "description",
            "description_ja",
        ]

    def window_changed(self) -> bool:
        if self.instance.pk is None:
            return False
        return bool({"launch_window_start", "launch_window_end"} & set(self.changed_data))

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if self.window_changed() and not cleaned.get("schedule_change_reason", "").strip():
            self.add_error(
                "schedule_change_reason",
                _(
                    "The launch window changed: say why. The reason is recorded in the "
                    "mission's schedule history."
                ),
            )
        return cleaned


class LanderPositionForm(forms.ModelForm):
    class Meta:
        model = LanderPosition
        fields = [
            "code",
            "name",
            "max_length_mm",
            "max_width_mm",
            "max_height_mm",
            "max_power_w",
            "max_data_kbps",
            "min_temperature_c",
            "max_temperature_c",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require_positive(self, ["max_length_mm", "max_width_mm", "max_height_mm"])

    def clean(self) -> dict[str, Any]:
        super().clean()
        low = self.cleaned_data.get("min_temperature_c")
        high = self.cleaned_data.get("max_temperature_c")
        if low is not None and high is not None and low > high:
            self.add_error(
                "max_temperature_c", _("The maximum temperature must not be below the minimum.")
            )
        return self.cleaned_data


class LanderModelAdminForm(forms.ModelForm):
    class Meta:
        model = LanderModel
        fields = ["name", "manufacturer", "payload_capacity_g", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require_positive(self, ["payload_capacity_g"])

    def clean_payload_capacity_g(self) -> int | None:
        capacity: int | None = self.cleaned_data.get("payload_capacity_g")
        lander = self.instance
        if capacity is None or lander.pk is None or capacity >= lander.payload_capacity_g:
            return capacity
        # Each mission's lock, in pk order, so no class grows into the room being removed.
        for mission in Mission.objects.filter(lander=lander).order_by("pk").only("pk", "code"):
            try:
                allocated_g = mission_check_allocations(mission_id=mission.pk)
            except AllocationExceeded as exc:
                allocated_g = exc.allocated_g
            if allocated_g > capacity:
                raise ValidationError(
                    _(
                        "Mission %(code)s already allocates %(allocated)s to its slot classes; "
                        "the capacity cannot go below that (you entered %(capacity)s)."
                    ),
                    params={
                        "code": mission.code,
                        "allocated": format_kg(allocated_g),
                        "capacity": format_kg(capacity),
                    },
                )
        return capacity
