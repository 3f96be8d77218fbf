"""Back office for money moved by bank transfer: the "Record a bank transfer" page of a
booking (reached from its change page), and the page on which the sales manager records a
bank-transfer refund as paid out (``bookings.change_refund``). Sales type the amount as the
bank statement shows it, in major units ("1,234.56" dollars, "135,000,000" yen); it is
converted to minor units exactly (``Decimal``, never a float) and recorded by
``bookings.transfers``, which also refuses a double submit of the same transfer. Recording a
transfer needs ``bookings.add_payment`` (the sales role). ``BookingAdmin.get_urls`` adds
``transfer_urls``.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import User
from bookings import plans
from bookings.exceptions import BookingError
from bookings.models import (
    Booking,
    Instalment,
    InstalmentStatus,
    PaymentProvider,
    Refund,
    RefundStatus,
)
from bookings.services import Actor
from bookings.transfers import (
    DuplicateTransfer,
    bank_details,
    payment_record_transfer,
    refund_record_paid_out,
)
from marketplace.money import Currency, Money, minor_unit_exponent

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

RECORD_TRANSFER = "bookings.add_payment"
RECORD_PAYOUT = "bookings.change_refund"
# Larger than any price we sell (and than a BigIntegerField of minor units can hold).
MAX_MAJOR_DIGITS = 15


def major_to_minor(text: str, currency: str) -> int:
    """An amount as a person writes it ("135,000,000", "1234.5") in minor units of
    ``currency``, exactly. Raises ``forms.ValidationError`` with a message for sales."""
    cleaned = text.replace(",", "").replace("_", "").strip()
    exponent = minor_unit_exponent(currency)
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise forms.ValidationError(_("Enter the amount as digits, e.g. 135,000,000.")) from None
    if not value.is_finite() or value <= 0:
        raise forms.ValidationError(_("The amount received must be more than zero."))
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        if exponent == 0:
            raise forms.ValidationError(
                _("%(currency)s has no smaller unit: enter a whole amount.")
                % {"currency": currency}
            )
        raise forms.ValidationError(
            _("%(currency)s amounts have at most %(places)s decimal places.")
            % {"currency": currency, "places": exponent}
        )
    if value.adjusted() >= MAX_MAJOR_DIGITS:
        raise forms.ValidationError(_("That amount is too large to be a payment."))
    return int(minor)


class TransferForm(forms.Form):
    instalment = forms.TypedChoiceField(
        label=gettext_lazy("For"), coerce=int, required=False, empty_value=None
    )
    currency = forms.ChoiceField(label=gettext_lazy("Currency received"), choices=Currency.choices)
    amount = forms.CharField(
        label=gettext_lazy("Amount received"),
        max_length=40,
        help_text=gettext_lazy("As the bank statement shows it, e.g. 135,000,000 or 1,234.56."),
    )
    received_on = forms.DateField(
        label=gettext_lazy("Received on"), widget=forms.DateInput(attrs={"type": "date"})
    )
    bank_reference = forms.CharField(
        label=gettext_lazy("Reference on the statement"),
        max_length=140,
        help_text=gettext_lazy(
            "What the payer quoted (their payment reference), or the bank's transaction number."
        ),
    )
    note = forms.CharField(
        label=gettext_lazy("Note (kept in the history)"),
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: Any, booking: Booking, instalments: list[Instalment], **kw: Any):
        super().__init__(*args, **kw)
        self.booking = booking
        choices: list[tuple[Any, str]] = [("", _("The next instalment due"))] if instalments else []
        choices += [
            (
                row.pk,
                _("%(label)s: %(amount)s, %(paid)s received")
                % {
                    "label": row.label,
                    "amount": row.money,
                    "paid": Money(row.amount_paid, row.currency),
                },
            )
            for row in instalments
            if row.status != InstalmentStatus.CANCELLED
        ]
        field = cast(forms.TypedChoiceField, self.fields["instalment"])
        field.choices = choices or [("", _("The booking (paid in full)"))]
        self.fields["currency"].initial = booking.currency

    def clean_received_on(self) -> datetime:
        day = self.cleaned_data["received_on"]
        if day > timezone.localdate():
            raise forms.ValidationError(_("A transfer cannot be received in the future."))
        return timezone.make_aware(datetime.combine(day, time.min))

    def clean_currency(self) -> str:
        currency = str(self.cleaned_data["currency"])
        if currency != self.booking.currency:
            raise forms.ValidationError(
                _(
                    "This booking is priced in %(currency)s. Money received in another "
                    "currency cannot be recorded against it; ask finance."
                )
                % {"currency": self.booking.currency}
            )
        return currency

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "amount" in data and "currency" in data:
            try:
                data["amount_minor"] = major_to_minor(str(data["amount"]), data["currency"])
            except forms.ValidationError as error:
                self.add_error("amount", error)
        return data


def transfer_urls(model_admin: ModelAdmin[Booking]) -> list[URLPattern]:
    """The transfer page's URL, for ``BookingAdmin.get_urls``."""

    def view(request: HttpRequest, object_id: str) -> HttpResponse:
        return record_transfer_view(model_admin, request, object_id)

    def payout(request: HttpRequest, object_id: str, refund_id: int) -> HttpResponse:
        return refund_paid_out_view(model_admin, request, object_id, refund_id)

    return [
        path(
            "<path:object_id>/record-transfer/",
            model_admin.admin_site.admin_view(view),
            name="bookings_booking_record_transfer",
        ),
        path(
            "<path:object_id>/refunds/<int:refund_id>/paid-out/",
            model_admin.admin_site.admin_view(payout),
            name="bookings_booking_refund_paid_out",
        ),
    ]


def record_transfer_view(
    model_admin: ModelAdmin[Booking], request: HttpRequest, object_id: str
) -> HttpResponse:
    if not request.user.has_perm(RECORD_TRANSFER):
        raise PermissionDenied
    booking = model_admin.get_object(request, unquote(object_id))
    if booking is None:
        raise Http404(_("No such booking."))
    change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
    instalments = list(booking.instalments.order_by("position"))
    form = TransferForm(
        request.POST if request.method == "POST" else None,
        booking=booking,
        instalments=instalments,
        initial={"received_on": timezone.localdate()},
    )
    if request.method == "POST" and form.is_valid():
        user = request.user
        assert isinstance(user, User)  # noqa: S101 (admin_view lets only staff users in)
        try:
            outcome = payment_record_transfer(
                booking_id=booking.pk,
                amount=form.cleaned_data["amount_minor"],
                currency=form.cleaned_data["currency"],
                received_at=form.cleaned_data["received_on"],
                bank_reference=form.cleaned_data["bank_reference"],
                note=form.cleaned_data["note"],
                instalment_id=form.cleaned_data["instalment"],
                actor=Actor.for_user(user),
            )
        except DuplicateTransfer as duplicate:
            messages.warning(request, duplicate.message)
            return HttpResponseRedirect(change_url)
        except BookingError as error:
            form.add_error(None, error.message)
        else:
            model_admin.log_change(
                request, booking, f"Recorded a bank transfer of {outcome.payment.money}."
            )
            _report(request, booking, outcome)
            return HttpResponseRedirect(change_url)
    summary = plans.booking_money_summary(booking)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Record a bank transfer for %(ref)s") % {"ref": booking.reference},
        "opts": model_admin.opts,
        "booking": booking,
        "form": form,
        "summary": summary,
        "payment_reference": booking.payment_reference
        or plans.payment_reference_for(booking.reference),
        "bank_details": bank_details(),
    }
    return TemplateResponse(request, "admin/bookings/booking/record_transfer.html", context)


def _report(request: HttpRequest, booking: Booking, outcome: Any) -> None:
    what = outcome.instalment.label if outcome.instalment else _("the booking")
    messages.success(
        request,
        _("Recorded %(amount)s for %(what)s of %(ref)s.")
        % {"amount": outcome.payment.money, "what": what, "ref": booking.reference},
    )
    if outcome.still_owed.amount:
        messages.warning(
            request,
            _("Underpaid: %(owed)s is still owed on %(what)s.")
            % {"owed": outcome.still_owed, "what": what},
        )
    if outcome.overpaid.amount:
        messages.warning(
            request,
            _(
                "Overpaid: %(over)s more than was owed was received. It is flagged on the "
                "booking; refund it or agree with the customer how to apply it."
            )
            % {"over": outcome.overpaid},
        )
    if outcome.confirmed:
        messages.success(request, _("The booking is confirmed."))
    elif outcome.not_confirmed:
        messages.warning(request, outcome.not_confirmed)


class PayoutForm(forms.Form):
    bank_reference = forms.CharField(
        label=gettext_lazy("Reference of the outgoing transfer"),
        max_length=140,
        help_text=gettext_lazy("The bank's transaction number of the refund you sent."),
    )


def refund_paid_out_view(
    model_admin: ModelAdmin[Booking], request: HttpRequest, object_id: str, refund_id: int
) -> HttpResponse:
    """A refund of money received by transfer waits (pending) until someone sends it back by
    transfer; this page records that it was sent, through ``refund_record_paid_out``."""
    if not request.user.has_perm(RECORD_PAYOUT):
        raise PermissionDenied
    booking = model_admin.get_object(request, unquote(object_id))
    refund = (
        Refund.objects.select_related("payment")
        .filter(
            pk=refund_id,
            payment__booking=booking,
            payment__provider=PaymentProvider.BANK_TRANSFER,
        )
        .first()
    )
    if booking is None or refund is None:
        raise Http404(_("No such refund of this booking."))
    change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
    if refund.status != RefundStatus.PENDING:
        messages.info(request, _("This refund is no longer waiting to be paid out."))
        return HttpResponseRedirect(change_url)
    form = PayoutForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = request.user
        assert isinstance(user, User)  # noqa: S101 (admin_view lets only staff users in)
        try:
            refund_record_paid_out(
                refund_id=refund.pk,
                actor=Actor.for_user(user),
                bank_reference=form.cleaned_data["bank_reference"],
            )
        except BookingError as error:
            form.add_error(None, error.message)
        else:
            model_admin.log_change(request, booking, f"Refund {refund.money} paid out by transfer.")
            messages.success(
                request,
                _("Recorded the refund of %(amount)s as paid; its credit note follows.")
                % {"amount": refund.money},
            )
            return HttpResponseRedirect(change_url)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Refund %(amount)s paid out for %(ref)s")
        % {"amount": refund.money, "ref": booking.reference},
        "opts": model_admin.opts,
        "booking": booking,
        "refund": refund,
        "form": form,
    }
    return TemplateResponse(request, "admin/bookings/booking/refund_paid_out.html", context)
