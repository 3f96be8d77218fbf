"""Back office for waitlists and reseller webhooks. Registered when ``bookings.admin``
imports this module (``from bookings import admin_waitlist  # noqa: F401``).

- **Waitlist entries**: each class's queue in order, with the place of every waiting entry,
  the live status (an offer confirmed or lapsed reads so before any sweep) and the offer
  hold; actions to serve the selected entries' queues now (after sales raised a capacity,
  say) and to withdraw entries for a customer. Nothing here assigns a field: every change
  goes through ``bookings.waitlist``.
- **Webhook URLs**: per reseller, active or not, failures in a row, and the pending,
  delivered and failed deliveries; register a URL for a reseller (its secret is shown once),
  and re-enable URLs disabled after repeated failure (``bookings.webhooks_out``).
- **Webhook deliveries**: read-only, to answer "did you send event N, and what came back".
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import User
from bookings.exceptions import BookingError
from bookings.models import (
    WaitlistEntry,
    WaitlistStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from bookings.services import Actor
from bookings.waitlist import waitlist_serve, waitlist_withdraw, with_live_status
from bookings.webhooks_out import (
    MAX_ENDPOINTS_PER_ORGANISATION,
    webhook_endpoint_create,
    webhook_endpoint_enable,
    webhook_url_problem,
)
from marketplace.money import format_mass


def _actor(request: HttpRequest) -> Actor:
    user = request.user
    return Actor.for_user(user) if isinstance(user, User) else Actor.system("admin")


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    list_display = (
        "slot_class_display",
        "position_display",
        "status_display",
        "organisation",
        "amount_display",
        "currency",
        "channel",
        "offer_display",
        "created_at",
    )
    list_filter = ("status", "channel", "slot_class__mission")
    search_fields = ("organisation__name", "offer_booking__reference", "slot_class__name")
    list_select_related = ("slot_class__mission", "organisation", "offer_booking")
    # A class's queue reads top to bottom, in the order it is served.
    ordering = ("slot_class__mission__code", "slot_class", "created_at", "pk")
    actions = ("serve_queues", "withdraw_entries")
    readonly_fields = (
        "slot_class",
        "organisation",
        "created_by",
        "api_key",
        "channel",
        "mass_g",
        "quantity",
        "currency",
        "status",
        "offer_booking",
        "offered_at",
        "created_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WaitlistEntry]:
        return with_live_status(super().get_queryset(request), timezone.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # customers and resellers join; sales place holds instead

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # withdraw instead: the history stays

    @admin.display(description=_("slot class"), ordering="slot_class")
    def slot_class_display(self, entry: WaitlistEntry) -> str:
        return str(entry.slot_class)

    @admin.display(description=_("place in queue"))
    def position_display(self, entry: WaitlistEntry) -> str:
        position = getattr(entry, "position", None)
        return str(position) if position is not None else "–"

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, entry: WaitlistEntry) -> str:
        return str(WaitlistStatus(getattr(entry, "live_status", entry.status)).label)

    @admin.display(description=_("amount"))
    def amount_display(self, entry: WaitlistEntry) -> str:
        mass = format_mass(entry.mass_g)
        return f"{entry.quantity} × ({mass})" if entry.quantity else mass

    @admin.display(description=_("offer hold"))
    def offer_display(self, entry: WaitlistEntry) -> str:
        booking = entry.offer_booking
        if booking is None:
            return "–"
        url = reverse("admin:bookings_booking_change", args=[booking.pk])
        expires = booking.hold_expires_at
        until = f" (until {expires:%Y-%m-%d %H:%M} UTC)" if expires else ""
        return format_html('<a href="{}">{}</a>{}', url, booking.reference, until)

    @admin.action(description=_("Offer freed capacity to these classes' queues now"))
    def serve_queues(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        class_ids = sorted(set(queryset.values_list("slot_class_id", flat=True)))
        offers = sum(waitlist_serve(slot_class_id=class_id) for class_id in class_ids)
        self.message_user(
            request,
            ngettext("%(n)s offer made.", "%(n)s offers made.", offers) % {"n": offers},
            messages.SUCCESS if offers else messages.INFO,
        )

    @admin.action(description=_("Withdraw selected (declines an open offer)"))
    def withdraw_entries(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        done, refused = 0, 0
        for entry_id in queryset.values_list("pk", flat=True):
            try:
                waitlist_withdraw(entry_id=entry_id, actor=_actor(request))
                done += 1
            except BookingError:
                refused += 1
        self.message_user(
            request,
            _("%(done)s withdrawn, %(refused)s could not be (booked or lapsed).")
            % {"done": done, "refused": refused},
            messages.SUCCESS if not refused else messages.WARNING,
        )


class WebhookEndpointAddForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ("organisation", "url")

    def clean_url(self) -> str:
        url = str(self.cleaned_data.get("url") or "")
        problem = webhook_url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        organisation = cleaned.get("organisation")
        if organisation is not None and (
            WebhookEndpoint.objects.filter(organisation=organisation).count()
            >= MAX_ENDPOINTS_PER_ORGANISATION
        ):
            self.add_error(
                "organisation",
                _("This organisation already has %(n)s webhook URLs.")
                % {"n": MAX_ENDPOINTS_PER_ORGANISATION},
            )
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = (
        "url",
        "organisation",
        "is_active",
        "consecutive_failures",
        "pending",
        "delivered",
        "failed",
        "disabled_at",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("url", "organisation__name")
    list_select_related = ("organisation",)
    actions = ("enable_endpoints",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        def count(status: str) -> Count:
            return Count("deliveries", filter=Q(deliveries__status=status))

        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=count(WebhookDeliveryStatus.PENDING),
                delivered_count=count(WebhookDeliveryStatus.DELIVERED),
                failed_count=count(WebhookDeliveryStatus.FAILED),
            )
        )

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = WebhookEndpointAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        return (
            "organisation",
            "url",
            "is_active",
            "consecutive_failures",
            "disabled_at",
            "created_at",
        )

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        if change:
            return  # nothing on the change page is editable; enabling is an action
        created = webhook_endpoint_create(organisation=obj.organisation, url=obj.url)
        obj.pk, obj.secret, obj.created_at = created.pk, created.secret, created.created_at
        self.message_user(
            request,
            _("Signing secret, shown this once — give it to the reseller: %(secret)s")
            % {"secret": created.secret},
            messages.WARNING,
        )

    @admin.display(description=_("pending"), ordering="pending_count")
    def pending(self, endpoint: WebhookEndpoint) -> int:
        return int(getattr(endpoint, "pending_count", 0))

    @admin.display(description=_("delivered"), ordering="delivered_count")
    def delivered(self, endpoint: WebhookEndpoint) -> int:
        return int(getattr(endpoint, "delivered_count", 0))

    @admin.display(description=_("failed"), ordering="failed_count")
    def failed(self, endpoint: WebhookEndpoint) -> int:
        return int(getattr(endpoint, "failed_count", 0))

    @admin.action(description=_("Re-enable selected"), permissions=["change"])
    def enable_endpoints(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        ids = list(queryset.filter(is_active=False).values_list("pk", flat=True))
        for endpoint_id in ids:
            webhook_endpoint_enable(endpoint_id=endpoint_id)
        self.message_user(
            request,
            ngettext("%(n)s URL re-enabled.", "%(n)s URLs re-enabled.", len(ids)) % {"n": len(ids)},
            messages.SUCCESS,
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "event_id_display",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status",)
    search_fields = ("endpoint__url", "event__booking__reference")
    list_select_related = ("endpoint", "event")
    readonly_fields = (
        "endpoint",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("event id"), ordering="event__seq")
    def event_id_display(self, delivery: WebhookDelivery) -> str:
        return str(delivery.event.seq)

    @admin.display(description=_("type"))
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type
