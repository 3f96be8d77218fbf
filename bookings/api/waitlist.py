"""The waitlist in the reseller API (an extension of shared/API.md):

- ``POST /api/v1/waitlist/``: join a sold-out class's waitlist (``slot_class``, ``mass_g`` or
  ``quantity``, ``currency``); 409 ``capacity_available`` when the class can take the
  request now (place a hold instead);
- ``GET /api/v1/waitlist/`` and ``GET /api/v1/waitlist/{entry_id}/``: the key's own entries,
  with their status, the place in the queue while waiting, and the offer hold's reference
  and deadline once offered;
- ``POST /api/v1/waitlist/{entry_id}/withdraw/``: leave the queue, or decline an offer.

Offers also reach the reseller as events (``booking.held`` and ``waitlist.offered`` with the
deadline) in its feed and webhooks; an offer is a hold, confirmed like any other.
Conventions as for bookings: strict input, idempotent POSTs, errors mapped in one place,
another organisation's entry answers 404.
"""

from __future__ import annotations

from typing import Any, cast

from django.utils.translation import gettext as _
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from bookings import waitlist
from bookings.api.serializers import (
    CurrencyCodeField,
    DocumentedSerializer,
    StrictSerializer,
    _choice_field,
    _count,
    _positive,
)
from bookings.api.views import IDEMPOTENCY_PARAMETERS, WRITE_ERRORS, ResellerApiView
from bookings.models import BookingStatus, WaitlistEntry, WaitlistStatus
from config.api import ApiError, choice_filter, validated_query
from config.schema import error_responses
from marketplace.api.serializers import UtcDateTimeField
from marketplace.models import Channel

# Ids are 64-bit; a longer number in the path is simply no entry (never a database error).
MAX_ID = 2**63 - 1

WaitlistStatusField = _choice_field(
    WaitlistStatus,
    "WaitlistStatusEnum",
    "waiting → offered (a hold was placed for you: confirm it before offer_expires_at) → "
    "booked; offered → lapsed (unanswered) or withdrawn (declined); waiting → withdrawn. "
    "Values may grow: accept unknown ones.",
)


@extend_schema_serializer(component_name="WaitlistJoin")
class WaitlistJoinInputSerializer(StrictSerializer):
    """A place in a sold-out class's queue: mass_g for per_kg classes, quantity for per_unit
    ones, within the class's minimum, maximum and step."""

    slot_class = _positive("The slot class's id (from GET /missions/).")
    mass_g = _positive(
        "Mass wanted in grams (per_kg classes): within the class's minimum and maximum, a "
        "multiple of its mass_step_g.",
        required=False,
    )
    quantity = _positive("Units wanted (per_unit classes, instead of mass_g).", required=False)
    currency = CurrencyCodeField()


@extend_schema_serializer(component_name="WaitlistWithdraw")
class WaitlistWithdrawInputSerializer(StrictSerializer):
    """No fields: a body-less request counts as ``{}``."""


class WaitlistEntrySerializer(DocumentedSerializer[WaitlistEntry]):
    """An entry as the reseller sees it. Instances come from ``bookings.waitlist``'s
    selectors (the ``live_status`` and ``position`` annotations)."""

    id = serializers.IntegerField(help_text="The entry's id.")
    status = WaitlistStatusField(source="live_status")
    mission = serializers.CharField(source="slot_class.mission.code", help_text="e.g. M3")
    slot_class = serializers.IntegerField(source="slot_class_id")
    mass_g = _count("Mass wanted in grams.")
    quantity = _count("Units wanted (per_unit classes); null for per_kg.", nullable=True)
    currency = serializers.CharField(help_text="The currency the offer is priced in.")
    channel = serializers.ChoiceField(choices=Channel.choices, help_text="Where it was joined.")
    position = _count(
        "The place in the class's queue, from 1 (entries ahead of it that still wait, plus "
        "one); null unless waiting. Freed capacity goes to the first entries that fit, so "
        "a smaller entry behind a larger one may be offered first.",
        nullable=True,
    )
    offer_booking = serializers.SerializerMethodField(
        help_text="The reference of the offer hold once offered (a booking like any other: "
        "confirm it with POST /bookings/{reference}/confirm/); null before."
    )
    offer_expires_at = serializers.SerializerMethodField(
        help_text="When the offer hold lapses; null unless the status is offered."
    )
    offered_at = UtcDateTimeField(allow_null=True)
    created_at = UtcDateTimeField()

    @extend_schema_field({"type": "string", "nullable": True, "example": "K7Q2ZP"})
    def get_offer_booking(self, entry: WaitlistEntry) -> str | None:
        booking = entry.offer_booking
        return booking.reference if booking is not None else None

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_offer_expires_at(self, entry: WaitlistEntry) -> str | None:
        booking = entry.offer_booking
        if getattr(entry, "live_status", entry.status) != WaitlistStatus.OFFERED:
            return None
        if booking is None or booking.hold_expires_at is None:
            return None
        if booking.status != BookingStatus.HELD:
            return None
        return str(UtcDateTimeField().to_representation(booking.hold_expires_at))


class WaitlistListQuerySerializer(serializers.Serializer[Any]):
    status = choice_filter(
        WaitlistStatus,
        help_text="The live status: offered means an offer hold still running; lapsed "
        "includes offers past their deadline that no sweep has written yet.",
    )


ENTRY_PARAMETER = OpenApiParameter(
    "entry_id",
    int,
    OpenApiParameter.PATH,
    description="The entry's id. Another organisation's entry is 404.",
)


def path_id(value: str | int) -> int:
    """An id from the path. The route takes any segment, so that ``/waitlist/abc/`` is the
    API's JSON 404 rather than the site's HTML one; an id that cannot exist is 404 too
    (never a database error)."""
    text = str(value)
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise exceptions.NotFound(_("Not found."))
    return int(text)


def waitlist_api_error_for(exc: Exception) -> Exception:
    if isinstance(exc, waitlist.CapacityAvailable):
        extra: dict[str, Any] = {"available_g": exc.available_g}
        if exc.available_units is not None:
            extra["available_units"] = exc.available_units
        return ApiError(
            status_code=status.HTTP_409_CONFLICT, code=exc.code, detail=exc.message, extra=extra
        )
    if isinstance(exc, WaitlistEntry.DoesNotExist):
        return exceptions.NotFound(_("No waitlist entry has this id."))
    return exc


class WaitlistApiView(ResellerApiView):
    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(waitlist_api_error_for(exc))

    def get_entry(self, entry_id: str | int) -> WaitlistEntry:
        return waitlist.waitlist_get(
            organisation=self.client.organisation, entry_id=path_id(entry_id)
        )

    def entry_response(
        self, entry_id: str | int, status_code: int = status.HTTP_200_OK
    ) -> Response:
        return Response(WaitlistEntrySerializer(self.get_entry(entry_id)).data, status=status_code)


class WaitlistListView(WaitlistApiView):
    @extend_schema(
        operation_id="waitlist_list",
        summary="Your organisation's waitlist entries, newest first",
        description=(
            "Only the key's organisation's entries, each with its live status, its place in "
            "the queue while waiting, and the offer hold's reference and deadline once "
            "offered. An unknown status is 400 invalid."
        ),
        tags=["waitlist"],
        parameters=[WaitlistListQuerySerializer],
        responses={200: WaitlistEntrySerializer(many=True), **error_responses("invalid")},
    )
    def get(self, request: Request) -> Response:
        query = validated_query(WaitlistListQuerySerializer, request)
        entries = waitlist.waitlist_list(
            organisation=self.client.organisation, status=query.get("status")
        )
        # The base view is typed for bookings; pagination itself does not care.
        page: Any = self.paginate_queryset(cast(Any, entries))
        return self.get_paginated_response(WaitlistEntrySerializer(page, many=True).data)

    @extend_schema(
        operation_id="waitlist_join",
        summary="Join a sold-out class's waitlist",
        description=(
            "Takes a place in the queue of a class that cannot take the request now. When "
            "capacity is freed (a cancel, an expired hold), the first waiting entries that "
            "fit get an offer: a hold placed for you, at the day's price, to confirm before "
            "its deadline like any hold (events booking.held and waitlist.offered). A class "
            "with room for the request now answers 409 capacity_available: place a hold. "
            "Checked against the class's limits like a hold (400 invalid naming the field)."
        ),
        tags=["waitlist"],
        request=WaitlistJoinInputSerializer,
        parameters=IDEMPOTENCY_PARAMETERS,
        responses={
            201: WaitlistEntrySerializer,
            **error_responses(
                "invalid",
                "currency_not_offered",
                "channel_not_allowed",
                "sales_closed",
                "capacity_available",
                *WRITE_ERRORS,
            ),
        },
    )
    def post(self, request: Request) -> Response:
        return self.idempotent(self._join)

    def _join(self) -> Response:
        serializer = WaitlistJoinInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        entry = waitlist.waitlist_join(
            slot_class_id=data["slot_class"],
            mass_g=data.get("mass_g"),
            quantity=data.get("quantity"),
            currency=data["currency"],
            organisation=self.client.organisation,
            channel=Channel.API,
            actor=self.actor(),
        )
        return self.entry_response(entry.pk, status.HTTP_201_CREATED)


class WaitlistDetailView(WaitlistApiView):
    @extend_schema(
        operation_id="waitlist_retrieve",
        summary="One of your waitlist entries",
        tags=["waitlist"],
        parameters=[ENTRY_PARAMETER],
        responses={200: WaitlistEntrySerializer, **error_responses("not_found")},
    )
    def get(self, request: Request, entry_id: str) -> Response:
        return self.entry_response(entry_id)


class WaitlistWithdrawView(WaitlistApiView):
    @extend_schema(
        operation_id="waitlist_withdraw",
        summary="Leave the waitlist, or decline an offer",
        description=(
            "A waiting entry leaves the queue. An offered one declines its offer: the offer "
            "hold is cancelled and its capacity goes to the next entries that fit. "
            "Withdrawing a withdrawn entry returns it unchanged; a booked or lapsed one is "
            "409 invalid_state (cancel the booking instead). No body is needed."
        ),
        tags=["waitlist"],
        request=WaitlistWithdrawInputSerializer,
        parameters=[ENTRY_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={
            200: WaitlistEntrySerializer,
            **error_responses("invalid", "not_found", "invalid_state", *WRITE_ERRORS),
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        return self.idempotent(lambda: self._withdraw(entry_id))

    def _withdraw(self, entry_id: str) -> Response:
        entry = self.get_entry(entry_id)
        WaitlistWithdrawInputSerializer(data=self.request.data).is_valid(raise_exception=True)
        waitlist.waitlist_withdraw(entry_id=entry.pk, actor=self.actor())
        return self.entry_response(entry.pk)
