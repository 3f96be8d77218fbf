"""The reseller API's schedule-change offers and rebooking (``bookings.reaccommodation``):

- ``GET /api/v1/bookings/{reference}/offers/``: the booking's re-accommodation offers, newest
  first, each with what can be answered now (``choices``) and the classes with room a move
  may go to (``move_targets``);
- ``POST /api/v1/bookings/{reference}/offers/{offer_id}/answer/`` with
  ``{"choice": "stay" | "move" | "cancel", "slot_class": <id, for move only>}``;
- ``POST /api/v1/bookings/{reference}/rebook/`` with ``{"slot_class": <id>}``: move a
  confirmed booking to a later mission for the class's rebooking fee.

Like the other keyed endpoints: the views are thin, domain errors map through
``api_error_for``, writes run under ``Idempotency-Key``, and another organisation's booking
(or an offer of another booking) is 404 exactly as a missing one.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from bookings.api.serializers import (
    BookingSerializer,
    DocumentedSerializer,
    StrictSerializer,
    _choice_field,
    _positive,
)
from bookings.api.views import (
    IDEMPOTENCY_PARAMETERS,
    REFERENCE_PARAMETER,
    WRITE_ERRORS,
    ResellerApiView,
)
from bookings.models import OfferStatus
from bookings.reaccommodation import (
    OfferChoice,
    OfferSummary,
    Rebooking,
    booking_rebook,
    offer_answer,
    offer_summaries,
)
from config.schema import error_responses
from marketplace.api.serializers import (
    MoneySerializer,
    ScheduleChangeSerializer,
    UtcDateTimeField,
)
from marketplace.models import SlotClass

# Path parameters are 64-bit ids; anything larger cannot be an offer (and must not reach
# the database, which would refuse the number rather than find nothing).
MAX_ID = 2**63 - 1


def _offer_id(raw: str) -> int | None:
    """The path's offer id, or None for anything that cannot be one. (The URL takes any
    text, so a malformed id is the API's own 404, not the site's HTML one.)"""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


OfferStatusField = _choice_field(
    OfferStatus,
    "OfferStatusEnum",
    "open until answered; then stayed, moved or cancelled. An open offer past its deadline "
    "reads defaulted (the booking stays) before any sweep. Values may grow.",
)
OfferChoiceField = _choice_field(
    OfferChoice,
    "OfferChoiceEnum",
    "stay on the rescheduled mission; move to another mission's class with room (free, the "
    "price is kept); cancel with everything paid refunded.",
)

ANSWER_ERRORS = (
    "invalid",
    "currency_not_offered",
    "channel_not_allowed",
    "not_found",
    "insufficient_capacity",
    "sales_closed",
    "invalid_state",
    *WRITE_ERRORS,
)


# --- output ------------------------------------------------------------------------------


@extend_schema_serializer(component_name="MoveTarget")
class MoveTargetSerializer(DocumentedSerializer[SlotClass]):
    """A class the booking may move to now, with room for it."""

    slot_class = serializers.IntegerField(source="pk", help_text="Send this as slot_class.")
    mission = serializers.CharField(source="mission.code", help_text="e.g. M4")
    name = serializers.CharField(help_text="The class's name.")
    launch_window_start = UtcDateTimeField(source="mission.launch_window_start")
    launch_window_end = UtcDateTimeField(source="mission.launch_window_end")
    available_g = serializers.IntegerField(min_value=0, help_text="Mass still free.")
    available_units = serializers.IntegerField(
        min_value=0, allow_null=True, help_text="Units still free; null for per-kg classes."
    )


@extend_schema_serializer(component_name="ReaccommodationOffer")
class OfferSerializer(DocumentedSerializer[OfferSummary]):
    """A booking's choice after its mission's schedule changed."""

    id = serializers.IntegerField(source="offer.pk", help_text="Answer it by this id.")
    booking = serializers.CharField(source="offer.booking.reference", help_text="The reference.")
    mission = serializers.CharField(
        source="offer.schedule_change.mission.code",
        help_text="The mission whose launch window changed.",
    )
    schedule_change = ScheduleChangeSerializer(source="offer.schedule_change")
    status = OfferStatusField()
    deadline = UtcDateTimeField(
        source="offer.deadline", help_text="Unanswered by then, the booking stays."
    )
    choices = serializers.ListField(
        child=OfferChoiceField(),
        help_text="What can be answered now; empty once answered, past the deadline, or when "
        "the booking is no longer held or confirmed. move appears only when a class has room.",
    )
    move_targets = MoveTargetSerializer(
        source="targets", many=True, help_text="Where a move may go now (empty unless move)."
    )
    cancel_refund = MoneySerializer(
        allow_null=True,
        help_text="What cancelling gives back (everything paid); null unless cancel is a choice.",
    )
    moved_to = serializers.IntegerField(
        source="offer.target_slot_class_id",
        allow_null=True,
        help_text="The slot class the booking moved to; null unless moved.",
    )
    answered_at = UtcDateTimeField(source="offer.answered_at", allow_null=True)
    created_at = UtcDateTimeField(source="offer.created_at")


@extend_schema_serializer(component_name="Rebooking")
class RebookingSerializer(DocumentedSerializer[Rebooking]):
    """The booking on its new mission, and the rebooking fee now owed (invoiced)."""

    booking = BookingSerializer()
    fee = MoneySerializer(help_text="The source class's rebooking fee, owed.")


# --- input -------------------------------------------------------------------------------


@extend_schema_serializer(component_name="OfferAnswer")
class OfferAnswerInputSerializer(StrictSerializer):
    """stay, cancel, or move with the slot_class to move to (one of the offer's
    move_targets)."""

    choice = OfferChoiceField()
    slot_class = _positive("The class to move to (move only).", required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        moving = attrs["choice"] == OfferChoice.MOVE
        if moving and "slot_class" not in attrs:
            raise serializers.ValidationError({"slot_class": [_("Required to move.")]})
        if not moving and "slot_class" in attrs:
            raise serializers.ValidationError({"slot_class": [_("Only a move takes a class.")]})
        return attrs


@extend_schema_serializer(component_name="Rebook")
class RebookInputSerializer(StrictSerializer):
    """The class on a later mission to move to."""

    slot_class = _positive("A class with room on a mission that launches later.")


# --- views -------------------------------------------------------------------------------

OFFER_ID_PARAMETER = OpenApiParameter(
    "offer_id",
    int,
    OpenApiParameter.PATH,
    description="The offer's id (from the offers list). An offer of another booking is 404.",
)


class OfferListView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_offers_list",
        summary="The booking's schedule-change offers, newest first",
        description=(
            "When a mission's launch window changes, each held or confirmed booking on it "
            "gets an offer (and a mission.schedule_changed event): stay, move to another "
            "mission's class with room (free: the price and currency are kept), or cancel "
            "with everything paid refunded. Unanswered by the deadline, the booking stays."
        ),
        tags=["bookings"],
        parameters=[REFERENCE_PARAMETER],
        responses={200: OfferSerializer(many=True), **error_responses("not_found")},
    )
    def get(self, request: Request, reference: str) -> Response:
        booking = self.get_booking(reference)
        page: Any = self.paginate_queryset(offer_summaries(booking, now=timezone.now()))
        return self.get_paginated_response(OfferSerializer(page, many=True).data)


class OfferAnswerView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_offers_answer",
        summary="Answer a schedule-change offer",
        description=(
            "stay keeps the booking on the rescheduled mission; move takes `slot_class` "
            "(one of the offer's move_targets) and moves the booking there under the same "
            "reference, price and currency; cancel cancels it and refunds everything paid "
            "(`refund` of the booking). The same answer again returns the offer unchanged; "
            "another answer to an answered offer, or any answer past the deadline, is 409 "
            "invalid_state. A class without room is 409 insufficient_capacity; one that "
            "cannot take the booking (same mission, other destination, outside its limits) "
            "is 400 invalid on slot_class."
        ),
        tags=["bookings"],
        request=OfferAnswerInputSerializer,
        parameters=[REFERENCE_PARAMETER, OFFER_ID_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={200: OfferSerializer, **error_responses(*ANSWER_ERRORS)},
    )
    def post(self, request: Request, reference: str, offer_id: str) -> Response:
        return self.idempotent(lambda: self._answer(reference, offer_id))

    def _answer(self, reference: str, raw_offer_id: str) -> Response:
        booking = self.get_booking(reference)
        offer_id = _offer_id(raw_offer_id)
        if offer_id is None or not booking.offers.filter(pk=offer_id).exists():
            raise exceptions.NotFound(_("This booking has no offer with this id."))
        serializer = OfferAnswerInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        offer_answer(
            offer_id=offer_id,
            choice=serializer.validated_data["choice"],
            target_slot_class_id=serializer.validated_data.get("slot_class"),
            actor=self.actor(),
        )
        booking = self.get_booking(booking.reference)
        (summary,) = [s for s in offer_summaries(booking) if s.offer.pk == offer_id]
        return Response(OfferSerializer(summary).data)


class BookingRebookView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_rebook",
        summary="Move a confirmed booking to a later mission",
        description=(
            "For a payload that will not be ready: the booking moves to `slot_class` on a "
            "mission that launches later, with room, under the same reference, price and "
            "currency; everything paid is carried over and the source class's rebooking fee "
            "(`fee`) is owed. Only confirmed bookings (409 invalid_state otherwise, and while "
            "a schedule-change offer is open: answering it moves for free). Repeating the "
            "same move returns it unchanged."
        ),
        tags=["bookings"],
        request=RebookInputSerializer,
        parameters=[REFERENCE_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={200: RebookingSerializer, **error_responses(*ANSWER_ERRORS)},
    )
    def post(self, request: Request, reference: str) -> Response:
        return self.idempotent(lambda: self._rebook(reference))

    def _rebook(self, reference: str) -> Response:
        booking = self.get_booking(reference)
        serializer = RebookInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        done = booking_rebook(
            booking_id=booking.pk,
            target_slot_class_id=serializer.validated_data["slot_class"],
            actor=self.actor(),
        )
        moved = Rebooking(booking=self.get_booking(booking.reference), fee=done.fee)
        return Response(RebookingSerializer(moved).data)


__all__ = ["BookingRebookView", "OfferAnswerView", "OfferListView"]
