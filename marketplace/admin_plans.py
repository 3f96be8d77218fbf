"""Payment plans in the back office: a deposit and its instalments, edited together.

The plan's shares must make exactly 100% (the deposit's plus every step's:
``bookings.plans.plan_check``, the rule the schedules are built on), and each step says when
it falls due in one way only (days, or a milestone). The database backs the second rule with
a CheckConstraint; the step form says it in words first, on the field that is wrong. Only
the sales manager's role may add, change or delete plans (the model permissions in
``accounts.roles``); sales and finance see them read-only.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from bookings.plans import plan_check
from marketplace.models import DueKind, PaymentPlan, PaymentPlanStep


class PaymentPlanStepForm(forms.ModelForm):
    class Meta:
        model = PaymentPlanStep
        fields = ("position", "label", "percent", "due_kind", "days", "milestone")
        help_texts = {
            "days": _("For days before the launch window or after confirmation."),
            "milestone": _("For an instalment that falls due at a milestone."),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        due_kind = cleaned.get("due_kind")
        days, milestone = cleaned.get("days"), cleaned.get("milestone")
        if due_kind == DueKind.MILESTONE:
            if not milestone:
                self.add_error("milestone", _("Choose the milestone this instalment waits for."))
            if days is not None:
                self.add_error("days", _("A milestone instalment has no number of days."))
        elif due_kind:
            if days is None:
                self.add_error("days", _("Give the number of days."))
            if milestone:
                self.add_error(
                    "milestone", _("Only an instalment due at a milestone names a milestone.")
                )
        return cleaned


class PaymentPlanStepFormSet(forms.BaseInlineFormSet):
    """The steps of one plan: with the deposit they make exactly 100%."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return  # each form says what is wrong with it first
        # The admin gives the formset the plan as the form left it (the deposit entered).
        deposit = self.instance.deposit_percent
        if deposit is None:
            return
        steps = [
            form.instance
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        problems = plan_check(deposit, steps)
        if problems:
            raise ValidationError(problems, code="plan_unsound")


class PaymentPlanStepInline(admin.TabularInline):
    model = PaymentPlanStep
    form = PaymentPlanStepForm
    formset = PaymentPlanStepFormSet
    extra = 0
    ordering = ("position",)


@admin.register(PaymentPlan)
class PaymentPlanAdmin(admin.ModelAdmin):
    inlines = [PaymentPlanStepInline]
    list_display = ("name", "deposit_percent", "steps_display", "reminder_days", "grace_days")
    search_fields = ("name",)
    fields = ("name", "deposit_percent", ("reminder_days", "grace_days"))

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).prefetch_related("steps")

    @admin.display(description=_("instalments after the deposit"))
    def steps_display(self, obj: PaymentPlan) -> str:
        steps = list(obj.steps.all())
        if not steps:
            return str(_("none: the deposit is the whole price"))
        return ", ".join(f"{step.label} {step.percent}%" for step in steps)
