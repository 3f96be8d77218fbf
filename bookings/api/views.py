"""The keyed part of the reseller API: bookings and the events feed (shared/API.md).

Views are thin: a serializer parses and validates the input, one service does the work, a
selector reads the booking back for the response. Domain errors become their contract status
and code in one place (``api_error_for``), writes run under the request's
``Idempotency-Key`` (``bookings.idempotency``), and every read and write is scoped to the
key's organisation: another organisation's booking answers 404 exactly as a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import ApiClient
from bookings import selectors, services
from bookings.api.serializers import (
    BookingListQuerySerializer,
    BookingSerializer,
    CancelInputSerializer,
    ConfirmInputSerializer,
    EventFeedQuerySerializer,
    EventPageSerializer,
    HoldInputSerializer,
    PayloadPatchInputSerializer,
    payload_input,
)
from bookings.exceptions import (
    BookingError,
    BookingValidationError,
    ChannelNotAllowed,
    CreditLimitExceeded,
    CurrencyNotOffered,
    HoldExpired,
    HoldLimitExceeded,
    InsufficientCapacity,
    InvalidTransition,
    SalesClosed,
    ScreeningReview,
)
from bookings.idempotency import (
    ABANDONED_AFTER,
    IDEMPOTENCY_HEADER,
    MAX_KEY_LENGTH,
    REPLAYED_HEADER,
    run_idempotently,
)
from bookings.models import Booking
from config.api import ApiError
from config.schema import error_responses
from marketplace.models import Channel, SlotClass

# The contract status of each domain error; its code is the exception's own ``code``.
DOMAIN_ERROR_STATUS: dict[type[BookingError], int] = {
    CurrencyNotOffered: status.HTTP_400_BAD_REQUEST,
    ChannelNotAllowed: status.HTTP_403_FORBIDDEN,
    CreditLimitExceeded: status.HTTP_403_FORBIDDEN,
    InsufficientCapacity: status.HTTP_409_CONFLICT,
    SalesClosed: status.HTTP_409_CONFLICT,
    HoldLimitExceeded: status.HTTP_409_CONFLICT,
    HoldExpired: status.HTTP_409_CONFLICT,
    InvalidTransition: status.HTTP_409_CONFLICT,
    ScreeningReview: status.HTTP_409_CONFLICT,
}
EVENTS_PER_PAGE = 100


def api_error_for(exc: Exception) -> Exception:
    """The API error a domain error stands for; anything else is returned unchanged."""
    if isinstance(exc, BookingValidationError):
        return exceptions.ValidationError(exc.fields)
    if isinstance(exc, SlotClass.DoesNotExist):  # only booking_hold looks a class up by id
        return exceptions.ValidationError({"slot_class": [_("No slot class has this id.")]})
    if isinstance(exc, Booking.DoesNotExist):
        return exceptions.NotFound(_("No booking has this reference."))
    for error_class, status_code in DOMAIN_ERROR_STATUS.items():
        if isinstance(exc, error_class):
            extra: dict[str, Any] = {}
            if isinstance(exc, InsufficientCapacity):
                extra["available_g"] = exc.available_g
                if exc.available_units is not None:
                    extra["available_units"] = exc.available_units
            return ApiError(status_code=status_code, code=exc.code, detail=exc.message, extra=extra)
    return exc


class HasApiKey(BasePermission):
    """Only a request with a valid reseller key (no key: 401 not_authenticated)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ApiClient)


class BoundedJSONParser(JSONParser):
    """JSON whose nesting is too deep for Python's parser is a parse error, not a 500."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                _("JSON parse error - the document is nested too deeply.")
            ) from None


IDEMPOTENCY_PARAMETERS = [
    OpenApiParameter(
        IDEMPOTENCY_HEADER,
        {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        OpenApiParameter.HEADER,
        description=(
            f"Up to {MAX_KEY_LENGTH} printable characters, scoped to the API key and the path "
            "(without the query string). The same key with the same body (compared as parsed "
            "JSON) within 24 hours returns the first response (2xx or 4xx) again, with "
            "Idempotent-Replayed: true, and changes nothing; with another body it is 409 "
            "idempotency_key_reused; while the first request still runs, 409 "
            "idempotency_key_in_use (a request still unfinished after "
            f"{ABANDONED_AFTER.seconds // 60} minutes is taken as abandoned and the key runs "
            "again). A body-less request counts as {}. A key over "
            f"{MAX_KEY_LENGTH} characters is 400 invalid."
        ),
    ),
    OpenApiParameter(
        REPLAYED_HEADER,
        str,
        OpenApiParameter.HEADER,
        response=True,
        enum=["true"],
        description="Present (true) when this is the stored response to an earlier request "
        "with the same Idempotency-Key.",
    ),
]
REFERENCE_PARAMETER = OpenApiParameter(
    "reference",
    str,
    OpenApiParameter.PATH,
    description="The booking's reference, in any case. Another organisation's booking is 404.",
)
WRITE_ERRORS = ("parse_error", "idempotency_key_reused", "idempotency_key_in_use")


class ResellerApiView(generics.GenericAPIView[Booking]):
    """Keyed endpoints: a valid key is required, domain errors are mapped, writes are
    idempotent under ``Idempotency-Key``."""

    permission_classes = [HasApiKey]
    parser_classes = [BoundedJSONParser]
    filter_backends: list[Any] = []
    serializer_class = BookingSerializer

    @property
    def client(self) -> ApiClient:
        user = self.request.user
        if not isinstance(user, ApiClient):  # HasApiKey lets only keyed requests this far
            raise exceptions.NotAuthenticated()
        return user

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(api_error_for(exc))

    def idempotent(self, handler: Callable[[], Response]) -> Response:
        return run_idempotently(
            self.request,
            api_key=self.client.api_key,
            handler=handler,
            handle_exception=self.handle_exception,
        )

    def booking_response(self, reference: str, status_code: int = status.HTTP_200_OK) -> Response:
        booking = self.get_booking(reference, with_money=True)
        return Response(BookingSerializer(booking).data, status=status_code)

    def get_booking(self, reference: str, *, with_money: bool = False) -> Booking:
        try:
            return selectors.booking_get(
                organisation=self.client.organisation, reference=reference, with_money=with_money
            )
        except Booking.DoesNotExist:
            raise exceptions.NotFound(_("No booking has this reference.")) from None

    def actor(self) -> services.Actor:
        return services.Actor.for_api_key(self.client.api_key)


class BookingListView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_list",
        summary="Your organisation's bookings, newest first",
        description=(
            "Only the key's organisation's bookings. `status` filters by the live status "
            "(a hold past its expiry is expired before any sweep); an unknown status or "
            "mission code is 400 invalid."
        ),
        tags=["bookings"],
        parameters=[BookingListQuerySerializer],
        responses={200: BookingSerializer(many=True), **error_responses("invalid")},
    )
    def get(self, request: Request) -> Response:
        query = BookingListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        bookings = selectors.booking_list(
            organisation=self.client.organisation,
            status=query.validated_data.get("status") or None,
            mission_code=query.validated_data.get("mission") or None,
        )
        page = self.paginate_queryset(bookings)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="bookings_create",
        summary="Place a hold",
        description=(
            "Places a hold on a slot class: `mass_g` for per_kg classes, `quantity` for "
            "per_unit ones. Unknown fields are refused at every level (400 invalid naming "
            "the field). Optional payload and customer fields take null for 'not declared'. "
            "The hold lapses at `hold_expires_at`; confirm it before then."
        ),
        tags=["bookings"],
        request=HoldInputSerializer,
        parameters=IDEMPOTENCY_PARAMETERS,
        responses={
            201: BookingSerializer,
            **error_responses(
                "invalid",
                "currency_not_offered",
                "channel_not_allowed",
                "insufficient_capacity",
                "sales_closed",
                "hold_limit_exceeded",
                *WRITE_ERRORS,
            ),
        },
    )
    def post(self, request: Request) -> Response:
        return self.idempotent(self._hold)

    def _hold(self) -> Response:
        serializer = HoldInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        booking = services.booking_hold(
            **serializer.service_arguments(),
            organisation=self.client.organisation,
            channel=Channel.API,
            actor=self.actor(),
        )
        # Shown from what the hold wrote: reading it back would cost three queries, all under
        # the class's row lock (held until the Idempotency-Key's transaction commits).
        booking = selectors.booking_as_held(booking)
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)


class BookingDetailView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_retrieve",
        summary="One of your bookings",
        description=(
            "The reference is matched without regard to case. Another organisation's "
            "booking is 404 not_found, exactly as a missing one."
        ),
        tags=["bookings"],
        parameters=[REFERENCE_PARAMETER],
        responses={200: BookingSerializer, **error_responses("not_found")},
    )
    def get(self, request: Request, reference: str) -> Response:
        return self.booking_response(reference)


class BookingPayloadView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_payload_update",
        summary="Complete or correct the payload declaration",
        description=(
            "The body is the payload: the fields sent replace those fields, the rest stay "
            "(null clears a field). Checked against the class limits like a new booking. "
            "Allowed for held and confirmed bookings until the booking cutoff (409 "
            "sales_closed after it; 409 invalid_state for a cancelled or expired booking). "
            "Field errors use the same paths as in the booking, prefixed with `payload.` "
            "(e.g. `payload.dimensions_mm`, `payload.hazards.0.energy_wh`); an empty body "
            "is 400 invalid."
        ),
        tags=["bookings"],
        request=PayloadPatchInputSerializer,
        parameters=[REFERENCE_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={
            200: BookingSerializer,
            **error_responses(
                "invalid", "not_found", "sales_closed", "invalid_state", *WRITE_ERRORS
            ),
        },
    )
    def patch(self, request: Request, reference: str) -> Response:
        return self.idempotent(lambda: self._update(reference))

    def _update(self, reference: str) -> Response:
        booking = self.get_booking(reference)
        serializer = PayloadPatchInputSerializer(data=self.request.data)
        if not serializer.is_valid():
            # The same path as in the booking and in the POST body: payload.<field>.
            raise exceptions.ValidationError({"payload": serializer.errors})
        services.booking_payload_update(
            booking_id=booking.pk,
            payload=payload_input(serializer.validated_data),
            actor=self.actor(),
        )
        return self.booking_response(booking.reference)


class BookingConfirmView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_confirm",
        summary="Confirm a hold on your account",
        description=(
            "Confirms a held booking on the reseller's account (invoiced), within the "
            "organisation's credit limit. Confirming a confirmed booking returns it "
            "unchanged. No body is needed; a body must be an empty object. A customer who may "
            "be on the denied-party list is not confirmed: 409 screening_review, and the "
            "booking stays held (its hold extended) until sales have reviewed it."
        ),
        tags=["bookings"],
        request=ConfirmInputSerializer,
        parameters=[REFERENCE_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={
            200: BookingSerializer,
            **error_responses(
                "invalid",
                "not_found",
                "credit_limit_exceeded",
                "hold_expired",
                "invalid_state",
                "screening_review",
                *WRITE_ERRORS,
            ),
        },
    )
    def post(self, request: Request, reference: str) -> Response:
        return self.idempotent(lambda: self._confirm(reference))

    def _confirm(self, reference: str) -> Response:
        booking = self.get_booking(reference)
        ConfirmInputSerializer(data=self.request.data).is_valid(raise_exception=True)
        services.booking_confirm(booking_id=booking.pk, actor=self.actor(), on_account=True)
        return self.booking_response(booking.reference)


class BookingCancelView(ResellerApiView):
    @extend_schema(
        operation_id="bookings_cancel",
        summary="Cancel a booking",
        description=(
            "Cancels a held or confirmed booking: the capacity is free at once and `refund` "
            "holds what is due back under the class's policy. Cancelling a cancelled or "
            "expired booking returns it unchanged."
        ),
        tags=["bookings"],
        request=CancelInputSerializer,
        parameters=[REFERENCE_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={
            200: BookingSerializer,
            **error_responses("invalid", "not_found", *WRITE_ERRORS),
        },
    )
    def post(self, request: Request, reference: str) -> Response:
        return self.idempotent(lambda: self._cancel(reference))

    def _cancel(self, reference: str) -> Response:
        booking = self.get_booking(reference)
        serializer = CancelInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        services.booking_cancel(
            booking_id=booking.pk,
            actor=self.actor(),
            reason=serializer.validated_data.get("reason", ""),
        )
        return self.booking_response(booking.reference)


class EventFeedView(ResellerApiView):
    @extend_schema(
        operation_id="events_list",
        summary="What happened to your bookings, oldest first",
        description=(
            f"At most {EVENTS_PER_PAGE} events after the cursor `after`. Poll with the "
            "`next` of the last answer (returned even when `results` is empty): this "
            "never skips or repeats an event."
        ),
        tags=["events"],
        parameters=[EventFeedQuerySerializer],
        responses={200: EventPageSerializer, **error_responses("invalid")},
    )
    def get(self, request: Request) -> Response:
        query = EventFeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.cursor()
        events = services.booking_event_feed(
            organisation=self.client.organisation, after=after, limit=EVENTS_PER_PAGE
        )
        cursor = events[-1].seq if events else after
        return Response(EventPageSerializer({"results": events, "next": str(cursor)}).data)
