"""The customer's side of an enterprise hold: ``/complete/<token>/``.

No sign-in: the token in the link is the credential (``bookings.enterprise``). The page shows
the booking, its price and payment schedule and the contract terms, and takes the signer's
acceptance. Paying is for members of the organisation: after accepting, the invited person
signs in (or signs up) with the address the link went to and joins the organisation as a
booker (``complete_join``), which leads to the pay page.

A link that matches nothing is a 404 page, one whose hold is over a 410 page; neither says
anything about the booking. Wrong links are counted per client address, and a client that
has tried too many is answered 429 for a while, whatever it sends.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.models import Membership, User
from bookings import enterprise, plans, transfers
from bookings.exceptions import BookingError, HoldExpired, InvalidTransition
from bookings.models import Booking, BookingStatus
from marketplace.models import Milestone
from marketplace.money import STRIPE_MAX_CHARGE_MINOR, Money

# Wrong links a client may try before it is refused for a while (the tokens are 256 random
# bits: this only keeps a scanner from hammering the lookup).
BAD_LINK_LIMIT = 20
BAD_LINK_WINDOW_SECONDS = 15 * 60


class ContractAcceptForm(forms.Form):
    signer_name = forms.CharField(
        label=gettext_lazy("Your full name"),
        max_length=200,
        help_text=gettext_lazy("The person accepting the contract for the organisation."),
        error_messages={"required": gettext_lazy("Give the name of the person who accepts.")},
    )
    signer_email = forms.EmailField(
        label=gettext_lazy("Your e-mail address"),
        max_length=254,
        error_messages={
            "required": gettext_lazy("Give your e-mail address."),
            "invalid": gettext_lazy("Enter a valid e-mail address, such as name@example.com."),
        },
    )
    accept = forms.BooleanField(
        error_messages={
            "required": gettext_lazy(
                "Tick the box to accept the contract terms: the booking cannot be completed "
                "without them."
            )
        },
    )
    contract_version = forms.CharField(widget=forms.HiddenInput, max_length=20)

    def __init__(self, *args: Any, version: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["accept"].label = _("I accept the contract terms, version %(version)s.") % {
            "version": version
        }
        self.fields["contract_version"].initial = version

    def clean_signer_name(self) -> str:
        name = " ".join(str(self.cleaned_data["signer_name"]).split())
        if not name:
            raise forms.ValidationError(_("Give the name of the person who accepts."))
        return name


def _client_key(request: HttpRequest) -> str:
    return "enterprise.bad-links:" + str(request.META.get("REMOTE_ADDR", ""))


def _too_many_bad_links(request: HttpRequest) -> bool:
    return int(cache.get(_client_key(request)) or 0) >= BAD_LINK_LIMIT


def _count_bad_link(request: HttpRequest) -> None:
    key = _client_key(request)
    cache.add(key, 0, BAD_LINK_WINDOW_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, BAD_LINK_WINDOW_SECONDS)


def _private(response: HttpResponse) -> HttpResponse:
    # The URL is the credential: never sent on as a referrer, never indexed.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _unavailable(request: HttpRequest, reason: str) -> HttpResponse:
    """One page for every link that leads nowhere, saying only which kind of nowhere."""
    status = {"invalid": 404, "closed": 410, "throttled": 429}[reason]
    response = render(
        request, "bookings/enterprise/link_unavailable.html", {"reason": reason}, status=status
    )
    if reason == "throttled":
        response["Retry-After"] = str(BAD_LINK_WINDOW_SECONDS)
    return _private(response)


def _booking_or_unavailable(request: HttpRequest, token: str) -> Booking | HttpResponse:
    if _too_many_bad_links(request):
        return _unavailable(request, "throttled")
    booking = enterprise.enterprise_booking_for_token(token)
    if booking is None:
        _count_bad_link(request)
        return _unavailable(request, "invalid")
    status = booking.status_at()
    live = status == BookingStatus.HELD or (
        status == BookingStatus.CONFIRMED and booking.contract_accepted_at is not None
    )
    if not live:
        return _unavailable(request, "closed")
    return booking


def _next_step(request: HttpRequest, booking: Booking) -> dict[str, Any]:
    """What the accepted customer does next: sign in, join the organisation, or pay."""
    user = request.user
    if not isinstance(user, User):
        return {"step": "sign_in"}
    if not enterprise.invited_email_matches(booking, user):
        return {"step": "wrong_account"}
    member = Membership.objects.filter(user=user, organisation_id=booking.organisation_id).first()
    if member is None:
        return {"step": "join"}
    if not member.can_book:
        return {"step": "viewer"}
    return {"step": "pay"}


def _render(request: HttpRequest, booking: Booking, form: ContractAcceptForm) -> HttpResponse:
    now = timezone.now()
    summary = plans.booking_money_summary(booking, now=now)
    to_pay = plans.amount_to_pay(booking, summary.instalments)
    status = booking.status_at(now)
    here = request.path
    context = {
        "booking": booking,
        "status": status,
        "summary": summary,
        "schedule": [
            (i, Milestone(i.milestone).label if i.milestone in Milestone.values else "")
            for i in summary.instalments
        ],
        "payment_plan": booking.slot_class.payment_plan if summary.has_plan else None,
        "to_pay": Money(to_pay, booking.currency),
        "card_possible": 0 < to_pay <= STRIPE_MAX_CHARGE_MINOR,
        "bank_details": transfers.bank_details(),
        "organisation_label": booking.organisation.name,
        "contract_template": enterprise.contract_template(booking.contract_version),
        "form": form,
        "accepted": booking.contract_accepted_at is not None,
        "login_url": f"{reverse('account_login')}?next={here}",
        "signup_url": f"{reverse('account_signup')}?next={here}",
        **(_next_step(request, booking) if booking.contract_accepted_at else {}),
    }
    return _private(render(request, "bookings/enterprise/complete.html", context))


@never_cache
@require_http_methods(["GET", "POST"])
def complete(request: HttpRequest, token: str) -> HttpResponse:
    found = _booking_or_unavailable(request, token)
    if isinstance(found, HttpResponse):
        return found
    booking = found
    version = booking.contract_version
    if request.method != "POST" or booking.contract_accepted_at is not None:
        # A second submit of an accepted booking just shows it again.
        return _render(request, booking, ContractAcceptForm(version=version))
    form = ContractAcceptForm(request.POST, version=version)
    if not form.is_valid():
        return _render(request, booking, form)
    data = form.cleaned_data
    try:
        enterprise.enterprise_contract_accept(
            booking_id=booking.pk,
            token=token,
            signer_name=data["signer_name"],
            signer_email=data["signer_email"],
            contract_version=data["contract_version"],
        )
    except enterprise.CompletionLinkInvalid:
        return _unavailable(request, "invalid")
    except (HoldExpired, InvalidTransition):
        return _unavailable(request, "closed")
    except BookingError as error:  # the terms changed meanwhile: read them again
        messages.error(request, error.message)
        return HttpResponseRedirect(request.path)
    messages.success(
        request,
        _("Thank you: the contract terms are accepted. Next, pay the deposit."),
    )
    return HttpResponseRedirect(request.path)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def complete_join(request: HttpRequest, token: str) -> HttpResponse:
    if request.method != "POST":  # back from signing in: the page offers the button
        return HttpResponseRedirect(reverse("bookings:complete", args=[token]))
    found = _booking_or_unavailable(request, token)
    if isinstance(found, HttpResponse):
        return found
    booking = found
    user = request.user
    assert isinstance(user, User)  # noqa: S101 (login_required)
    here = reverse("bookings:complete", args=[token])
    try:
        enterprise.enterprise_customer_join(booking_id=booking.pk, token=token, user=user)
    except enterprise.CompletionLinkInvalid:
        return _unavailable(request, "invalid")
    except BookingError as error:
        messages.error(request, error.message)
        return HttpResponseRedirect(here)
    return HttpResponseRedirect(reverse("payments:pay", args=[booking.reference]))
