"""Bookings, their payload declarations and audit trail, and the outbox of side effects."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.models import ApiKey, Organisation
from bookings.querysets import BookingEventQuerySet, BookingQuerySet
from marketplace.models import Channel, SlotClass
from marketplace.money import Currency, Money

# Six characters without look-alikes: no 0/O, 1/I/L.
REFERENCE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REFERENCE_LENGTH = 6


class BookingStatus(models.TextChoices):
    HELD = "held", _("Held")
    CONFIRMED = "confirmed", _("Confirmed")
    CANCELLED = "cancelled", _("Cancelled")
    EXPIRED = "expired", _("Expired")
    # The mission flew (completed, or failed after launch): what is owed then is the policy's
    # and the insurer's business, never a silent refund.
    FLOWN = "flown", _("Flown")


BOOKING_TRANSITIONS: dict[str, set[str]] = {
    BookingStatus.HELD: {BookingStatus.CONFIRMED, BookingStatus.CANCELLED, BookingStatus.EXPIRED},
    BookingStatus.CONFIRMED: {BookingStatus.CANCELLED, BookingStatus.FLOWN},
    BookingStatus.CANCELLED: set(),
    BookingStatus.EXPIRED: set(),
    BookingStatus.FLOWN: set(),
}

# Statuses whose mass counts against the slot class's capacity. Flown mass stays counted:
# it went up with the lander and is never sold again.
CAPACITY_STATUSES = (BookingStatus.HELD, BookingStatus.CONFIRMED, BookingStatus.FLOWN)


class ReviewStatus(models.TextChoices):
    DECLARED = "declared", _("Declared")
    DATA_COMPLETE = "data_complete", _("Data complete")
    SAFETY_REVIEW = "safety_review", _("Safety review")
    EXPORT_REVIEW = "export_review", _("Export review")
    ACCEPTED = "accepted", _("Accepted")
    REJECTED = "rejected", _("Rejected")
    INTEGRATED = "integrated", _("Integrated")
    FLOWN = "flown", _("Flown")


class HazardType(models.TextChoices):
    LITHIUM_BATTERY = "lithium_battery", _("Lithium battery")
    PRESSURE_VESSEL = "pressure_vessel", _("Pressure vessel")
    PROPELLANT = "propellant", _("Propellant")
    RADIOACTIVE_SOURCE = "radioactive_source", _("Radioactive source")
    OTHER = "other", _("Other")


class ExportClassification(models.TextChoices):
    NOT_CONTROLLED = "not_controlled", _("Not controlled")
    EAR99 = "EAR99", _("EAR99")
    EAR_LISTED = "EAR_listed", _("EAR listed")
    ITAR = "ITAR", _("ITAR")
    JP_FEFTA_LISTED = "JP_FEFTA_listed", _("Japan FEFTA listed")


class ScreeningStatus(models.TextChoices):
    """Denied-party screening of the customer organisation, run before confirmation."""

    NOT_SCREENED = "not_screened", _("Not screened")
    CLEAR = "clear", _("Clear")
    MATCH = "match", _("Possible match: held for review")
    CLEARED = "cleared", _("Cleared by sales after review")
    DENIED = "denied", _("Denied")


class Booking(models.Model):
    # Unique through Meta.constraints: a plain unique=True would add a second, LIKE-pattern
    # index on PostgreSQL that every status change of a booking must also update.
    reference = models.CharField(_("reference"), max_length=REFERENCE_LENGTH)
    organisation = models.ForeignKey(
        Organisation,
        on_delete=models.PROTECT,
        related_name="bookings",
        verbose_name=_("organisation"),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="bookings_made",
        db_index=False,  # a partial index (Meta) leaves out the API's and sales' bookings
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="bookings"
    )
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    slot_class = models.ForeignKey(
        SlotClass,
        on_delete=models.PROTECT,
        related_name="bookings",
        verbose_name=_("slot class"),
        db_index=False,  # booking_class_status_expiry starts with it
    )
    mass_g = models.PositiveIntegerField(_("mass (g)"))
    quantity = models.PositiveIntegerField(_("quantity"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    price_amount = models.BigIntegerField(_("price (minor units)"))
    status = models.CharField(
        _("status"), max_length=12, choices=BookingStatus.choices, default=BookingStatus.HELD
    )
    hold_expires_at = models.DateTimeField(_("hold expires at"), null=True, blank=True)
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)
    on_account = models.BooleanField(_("confirmed on account"), default=False)
    refund_amount = models.BigIntegerField(_("refund due (minor units)"), null=True, blank=True)
    customer_name = models.CharField(_("customer name"), max_length=200, blank=True)
    customer_email = models.EmailField(_("customer e-mail"), blank=True)
    customer_organisation = models.CharField(_("customer organisation"), max_length=200, blank=True)
    terms_version = models.CharField(_("terms version"), max_length=20, blank=True)
    terms_accepted_at = models.DateTimeField(_("terms accepted at"), null=True, blank=True)
    # Bank transfers quote this, so sales can match money received to the booking.
    payment_reference = models.CharField(
        _("payment reference"), max_length=24, null=True, blank=True
    )
    # Set when an instalment is still unpaid after the plan's grace period: sales follow up
    # (a booking is never cancelled for it automatically). Cleared when it is paid.
    overdue_since = models.DateTimeField(_("overdue since"), null=True, blank=True)
    screening_status = models.CharField(
        _("denied-party screening"),
        max_length=12,
        choices=ScreeningStatus.choices,
        default=ScreeningStatus.NOT_SCREENED,
    )
    screening_note = models.TextField(_("screening note"), blank=True)
    # An enterprise hold placed by sales: the customer completes it through a link carrying
    # this token, accepting the contract (version, signer, time) before it is confirmed.
    completion_token = models.CharField(max_length=64, null=True, blank=True)
    contract_version = models.CharField(_("contract version"), max_length=20, blank=True)
    contract_signer_name = models.CharField(_("contract signed by"), max_length=200, blank=True)
    contract_signer_email = models.EmailField(_("signer's e-mail"), blank=True)
    contract_accepted_at = models.DateTimeField(_("contract accepted at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BookingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("booking")
        constraints = [
            # Partial and pattern-free unique indexes: the hold-expiry sweep updates 100,000
            # rows at once, and every index on them is an entry to rewrite per row.
            models.UniqueConstraint(fields=["reference"], name="booking_reference_unique"),
            models.UniqueConstraint(
                fields=["payment_reference"],
                condition=Q(payment_reference__isnull=False),
                name="booking_payment_reference_unique",
            ),
            models.UniqueConstraint(
                fields=["completion_token"],
                condition=Q(completion_token__isnull=False),
                name="booking_completion_token_unique",
            ),
            models.CheckConstraint(
                condition=Q(status__in=BookingStatus.values), name="booking_status_valid"
            ),
            models.CheckConstraint(condition=Q(mass_g__gt=0), name="booking_mass_positive"),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True) | Q(quantity__gt=0),
                name="booking_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(price_amount__gte=0), name="booking_price_non_negative"
            ),
            models.CheckConstraint(
                condition=~Q(status=BookingStatus.HELD) | Q(hold_expires_at__isnull=False),
                name="booking_held_has_expiry",
            ),
            models.CheckConstraint(
                condition=~Q(status=BookingStatus.CONFIRMED) | Q(confirmed_at__isnull=False),
                name="booking_confirmed_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status=BookingStatus.CANCELLED) | Q(cancelled_at__isnull=False),
                name="booking_cancelled_has_time",
            ),
            models.CheckConstraint(
                condition=Q(refund_amount__isnull=True)
                | Q(refund_amount__gte=0, refund_amount__lte=F("price_amount")),
                name="booking_refund_within_price",
            ),
            models.CheckConstraint(
                condition=Q(channel__in=Channel.values), name="booking_channel_valid"
            ),
            models.CheckConstraint(
                condition=Q(currency__in=Currency.values), name="booking_currency_valid"
            ),
            models.CheckConstraint(
                condition=Q(screening_status__in=ScreeningStatus.values),
                name="booking_screening_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["organisation", "-created_at"], name="booking_org_recent"),
            models.Index(
                fields=["overdue_since"],
                condition=Q(overdue_since__isnull=False),
                name="booking_overdue",
            ),
            models.Index(
                fields=["created_by"],
                condition=Q(created_by__isnull=False),
                name="booking_created_by",
            ),
            # One index for a class's bookings, by status, and for its lapsed holds (a hold
            # that finds no room by the counters releases them under the class lock, as the
            # sweep does). A plain slot_class index beside a partial one for the holds let
            # stale statistics pick the plain one at a sale opening, filtering every live
            # hold of the class on every new hold.
            models.Index(
                fields=["slot_class", "status", "hold_expires_at"],
                name="booking_class_status_expiry",
            ),
            models.Index(
                fields=["hold_expires_at"], condition=Q(status="held"), name="booking_held_expiry"
            ),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def price(self) -> Money:
        return Money(self.price_amount, self.currency)

    @property
    def refund(self) -> Money | None:
        if self.refund_amount is None:
            return None
        return Money(self.refund_amount, self.currency)

    def status_at(self, now: datetime | None = None) -> str:
        """The status a reader sees: a hold past its expiry is expired before any sweep."""
        if (
            self.status == BookingStatus.HELD
            and self.hold_expires_at is not None
            and self.hold_expires_at <= (now or timezone.now())
        ):
            return BookingStatus.EXPIRED
        return self.status

    @property
    def effective_status(self) -> str:
        annotated = getattr(self, "live_status", None)
        return annotated if annotated is not None else self.status_at()


class PayloadDeclaration(models.Model):
    """What flies. Its review runs beside the booking status, by operations staff."""

    booking = models.OneToOneField(Booking, on_delete=models.CASCADE, related_name="payload")
    name = models.CharField(_("payload name"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    mass_g = models.PositiveIntegerField(_("mass (g)"), null=True, blank=True)
    length_mm = models.PositiveIntegerField(_("length (mm)"), null=True, blank=True)
    width_mm = models.PositiveIntegerField(_("width (mm)"), null=True, blank=True)
    height_mm = models.PositiveIntegerField(_("height (mm)"), null=True, blank=True)
    power_w = models.PositiveIntegerField(_("power (W)"), null=True, blank=True)
    data_kbps = models.PositiveIntegerField(_("data rate (kbps)"), null=True, blank=True)
    hazards = models.JSONField(_("hazards"), default=list, blank=True)
    export_classification = models.CharField(
        _("export classification"),
        max_length=20,
        choices=ExportClassification.choices,
        null=True,
        blank=True,
    )
    inert_confirmed = models.BooleanField(_("confirmed inert"), default=False)
    review_note = models.TextField(_("review note"), blank=True)
    # The last "please complete your declaration" e-mail before the cutoff.
    reminded_at = models.DateTimeField(_("declaration reminder sent"), null=True, blank=True)
    review_status = models.CharField(
        _("review status"),
        max_length=20,
        choices=ReviewStatus.choices,
        default=ReviewStatus.DECLARED,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("payload declaration")
        constraints = [
            models.CheckConstraint(
                condition=Q(review_status__in=ReviewStatus.values), name="payload_review_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"payload of {self.booking_id}"

    @property
    def dimensions_mm(self) -> list[int] | None:
        if self.length_mm is None or self.width_mm is None or self.height_mm is None:
            return None
        return [self.length_mm, self.width_mm, self.height_mm]


class EventType(models.TextChoices):
    BOOKING_HELD = "booking.held", _("Held")
    BOOKING_CONFIRMED = "booking.confirmed", _("Confirmed")
    BOOKING_CANCELLED = "booking.cancelled", _("Cancelled")
    BOOKING_EXPIRED = "booking.expired", _("Expired")
    PAYLOAD_UPDATED = "payload.updated", _("Payload updated")
    PAYLOAD_REVIEW_CHANGED = "payload.review_changed", _("Payload review changed")
    MISSION_SCHEDULE_CHANGED = "mission.schedule_changed", _("Mission schedule changed")
    # Answers to a schedule change's re-accommodation offer (bookings.reaccommodation).
    OFFER_STAYED = "offer.stayed", _("Stays on the rescheduled mission")
    OFFER_MOVED = "offer.moved", _("Moved to another mission")
    OFFER_CANCELLED = "offer.cancelled", _("Cancelled with a full refund")
    OFFER_DEFAULTED = "offer.defaulted", _("Unanswered by the deadline: stays on the mission")
    # The customer moved a confirmed booking to a later mission, for the rebooking fee.
    BOOKING_REBOOKED = "booking.rebooked", _("Moved to a later mission")
    # An instalment still unpaid after the plan's grace period (bookings.instalment_reminders);
    # sales follow up, nothing is cancelled. Cleared once nothing is past its grace any more.
    BOOKING_OVERDUE = "booking.overdue", _("Payment overdue: flagged for sales")
    BOOKING_OVERDUE_CLEARED = "booking.overdue_cleared", _("Overdue payment settled")
    # Money by bank transfer, recorded by sales (bookings.transfers). Money beyond what was
    # owed is flagged, never absorbed; a transfer's refund is paid out by sales.
    TRANSFER_RECORDED = "payment.transfer_recorded", _("Bank transfer received")
    PAYMENT_OVERPAID = "payment.overpaid", _("Overpayment received: sales will refund it")
    REFUND_TO_PAY_OUT = "payment.refund_to_pay_out", _("Refund to be paid by bank transfer")
    REFUND_PAID_OUT = "payment.refund_paid_out", _("Refund paid by bank transfer")


class BookingEvent(models.Model):
    """The audit trail: every transition, who, when, why. ``seq`` is the events-feed position,
    given only after the row has committed (see ``bookings.services.booking_events_sequence``),
    so a poller reading ``seq > cursor`` never skips an event that committed late."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="events")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="booking_events"
    )
    type = models.CharField(_("type"), max_length=40)
    from_status = models.CharField(_("from"), max_length=12, blank=True)
    to_status = models.CharField(_("to"), max_length=12, blank=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor = models.CharField(_("actor"), max_length=200, help_text=_("Who, in words."))
    reason = models.TextField(_("reason"), blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(_("when"), default=timezone.now)
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)

    objects = BookingEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("booking event")
        indexes = [
            models.Index(fields=["organisation", "seq"], name="event_feed"),
            models.Index(fields=["id"], condition=Q(seq__isnull=True), name="event_unsequenced"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.from_status}→{self.to_status}"


class EventFeedCursor(models.Model):
    """A single row whose lock serialises the sequencer; ``last_seq`` is the last given."""

    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"event feed at {self.last_seq}"


class OutboxMessage(models.Model):
    """A side effect written in the same transaction as the change that causes it, dispatched
    on commit and by a periodic sweep, processed once (see ``bookings.outbox``)."""

    topic = models.CharField(max_length=60)
    payload = models.JSONField(default=dict)
    dedupe_key = models.CharField(max_length=200, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = _("outbox message")
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(processed_at__isnull=True),
                name="outbox_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} #{self.pk}"


class IdempotencyState(models.TextChoices):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyRecord(models.Model):
    """The first response to an ``Idempotency-Key``, scoped to the API key and the path."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    path = models.CharField(max_length=500)
    request_digest = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=IdempotencyState.choices)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key", "path"], name="idempotency_key_unique"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_age")]

    def __str__(self) -> str:
        return f"{self.key} → {self.response_status or self.state}"


# --- payments ---------------------------------------------------------------------------


class PaymentProvider(models.TextChoices):
    STRIPE = "stripe", _("Card (Stripe)")
    BANK_TRANSFER = "bank_transfer", _("Bank transfer")
    ACCOUNT = "account", _("On account")


class PaymentStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    REQUIRES_ACTION = "requires_action", _("Awaiting authentication")
    PROCESSING = "processing", _("Processing")
    AUTHORISED = "authorised", _("Authorised")
    SUCCEEDED = "succeeded", _("Paid")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Cancelled")


# A payment follows its PaymentIntent, which only moves forward. "failed" is Stripe's
# requires_payment_method after an attempt: Stripe may still report success for it (a late
# webhook of a confirmation we saw fail), so it is not terminal. Succeeded and canceled are.
PAYMENT_TRANSITIONS: dict[str, set[str]] = {
    PaymentStatus.PENDING: {
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.PROCESSING,
        PaymentStatus.AUTHORISED,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    },
    PaymentStatus.REQUIRES_ACTION: {
        PaymentStatus.PROCESSING,
        PaymentStatus.AUTHORISED,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    },
    PaymentStatus.PROCESSING: {
        PaymentStatus.AUTHORISED,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    },
    PaymentStatus.AUTHORISED: {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    },
    PaymentStatus.FAILED: {
        PaymentStatus.PROCESSING,
        PaymentStatus.AUTHORISED,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.CANCELED,
    },
    PaymentStatus.SUCCEEDED: set(),
    PaymentStatus.CANCELED: set(),
}

# Attempts whose outcome Stripe has not settled yet; reconciliation asks about them.
PAYMENT_OPEN_STATUSES = (
    PaymentStatus.PENDING,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.PROCESSING,
)


class Payment(models.Model):
    """One attempt to pay a booking. Card attempts are Stripe PaymentIntents authorised at
    the hold and captured once the booking is confirmed (see ``bookings.payments``).
    ``amount_refunded`` counts refunds requested or done, so it never passes ``amount``."""

    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(_("provider"), max_length=20, choices=PaymentProvider.choices)
    attempt = models.PositiveIntegerField(_("attempt"))
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    status = models.CharField(
        _("status"), max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    stripe_payment_intent_id = models.CharField(
        _("Stripe PaymentIntent"), max_length=255, unique=True, null=True, blank=True
    )
    stripe_payment_method_id = models.CharField(
        _("Stripe PaymentMethod"), max_length=255, blank=True
    )
    idempotency_key = models.CharField(max_length=255, unique=True)
    instalment = models.ForeignKey(
        "Instalment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payments",
        verbose_name=_("instalment"),
    )
    # A bank transfer as received: the reference the payer quoted and sales' note.
    bank_reference = models.CharField(_("transfer reference"), max_length=140, blank=True)
    note = models.TextField(_("note"), blank=True)
    failure_code = models.CharField(_("failure code"), max_length=100, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)
    amount_refunded = models.BigIntegerField(_("refunded (minor units)"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    authorised_at = models.DateTimeField(_("authorised at"), null=True, blank=True)
    succeeded_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    canceled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["booking", "attempt"]
        verbose_name = _("payment")
        constraints = [
            models.UniqueConstraint(fields=["booking", "attempt"], name="payment_attempt_unique"),
            models.CheckConstraint(
                condition=Q(status__in=PaymentStatus.values), name="payment_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(provider__in=PaymentProvider.values), name="payment_provider_valid"
            ),
            models.CheckConstraint(
                condition=Q(currency__in=Currency.values), name="payment_currency_valid"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0, amount_refunded__lte=F("amount")),
                name="payment_refunds_within_amount",
            ),
            models.CheckConstraint(
                condition=~Q(status=PaymentStatus.SUCCEEDED) | Q(succeeded_at__isnull=False),
                name="payment_succeeded_has_time",
            ),
        ]
        indexes = [
            models.Index(
                fields=["updated_at"],
                condition=Q(status__in=["pending", "requires_action", "processing"]),
                name="payment_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.booking_id} #{self.attempt} {self.status}"

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    @property
    def refunded(self) -> Money:
        return Money(self.amount_refunded, self.currency)

    @property
    def refundable_amount(self) -> int:
        if self.status != PaymentStatus.SUCCEEDED:
            return 0
        return self.amount - self.amount_refunded


class RefundStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Refunded")
    FAILED = "failed", _("Failed")


class RefundReason(models.TextChoices):
    CANCELLATION = "cancellation", _("Booking cancelled (cancellation policy)")
    HOLD_LAPSED = "hold_lapsed", _("Paid after the hold lapsed")
    DUPLICATE = "duplicate", _("Paid twice")
    GOODWILL = "goodwill", _("Goodwill or correction by sales")


class Refund(models.Model):
    """Money sent back for a payment. Written pending under the payment's row lock (which
    also counts it in ``Payment.amount_refunded``), then sent to Stripe by the outbox."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    status = models.CharField(
        _("status"), max_length=12, choices=RefundStatus.choices, default=RefundStatus.PENDING
    )
    reason = models.CharField(_("reason"), max_length=20, choices=RefundReason.choices)
    note = models.TextField(_("note"), blank=True)
    stripe_refund_id = models.CharField(
        _("Stripe refund"), max_length=255, unique=True, null=True, blank=True
    )
    failure_message = models.TextField(_("failure message"), blank=True)
    actor = models.CharField(_("requested by"), max_length=200)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(_("requested at"), default=timezone.now)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)

    class Meta:
        ordering = ["payment", "created_at", "pk"]
        verbose_name = _("refund")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=RefundStatus.values), name="refund_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(reason__in=RefundReason.values), name="refund_reason_valid"
            ),
            models.CheckConstraint(
                condition=Q(currency__in=Currency.values), name="refund_currency_valid"
            ),
            # A cancellation, a lapsed hold or a double payment is paid back once per
            # payment, however often the handlers that react to it run.
            models.UniqueConstraint(
                fields=["payment", "reason"],
                condition=Q(reason__in=["cancellation", "hold_lapsed", "duplicate"])
                & ~Q(status="failed"),
                name="refund_once_per_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.money} for payment {self.payment_id} ({self.status})"

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)


class StripeEvent(models.Model):
    """A webhook delivery, kept by Stripe's event id so redeliveries are recognised."""

    stripe_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["received_at", "pk"]
        verbose_name = _("Stripe event")
        indexes = [
            models.Index(
                fields=["received_at"],
                condition=Q(processed_at__isnull=True),
                name="stripe_event_unprocessed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id}"


# --- payment plans: instalments, and the documents issued for money ------------------------


class InstalmentKind(models.TextChoices):
    FULL = "full", _("Payment in full")
    DEPOSIT = "deposit", _("Deposit")
    INSTALMENT = "instalment", _("Instalment")


class InstalmentStatus(models.TextChoices):
    DUE = "due", _("Due")
    PAID = "paid", _("Paid")
    # The booking ended (cancelled, expired, offloaded) before this was paid.
    CANCELLED = "cancelled", _("Cancelled")


class Instalment(models.Model):
    """One amount a booking owes, and when. The instalments of a booking add up to its price
    exactly (``bookings.plans``). ``amount_paid`` counts money received against it, which may
    fall short of ``amount`` (underpaid) or pass it (overpaid): both are shown, never
    absorbed. ``due_at`` is empty for a milestone not reached yet."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="instalments")
    position = models.PositiveSmallIntegerField(_("position"))
    kind = models.CharField(_("kind"), max_length=12, choices=InstalmentKind.choices)
    label = models.CharField(_("label"), max_length=100)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    due_at = models.DateTimeField(_("due"), null=True, blank=True)
    milestone = models.CharField(_("milestone"), max_length=20, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=InstalmentStatus.choices, default=InstalmentStatus.DUE
    )
    amount_paid = models.BigIntegerField(_("paid (minor units)"), default=0)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    reminded_at = models.DateTimeField(_("reminder sent"), null=True, blank=True)
    overdue_notified_at = models.DateTimeField(_("overdue notice sent"), null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["booking", "position"]
        verbose_name = _("instalment")
        constraints = [
            models.UniqueConstraint(
                fields=["booking", "position"], name="instalment_position_unique"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="instalment_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount_paid__gte=0), name="instalment_paid_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(status__in=InstalmentStatus.values), name="instalment_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=InstalmentKind.values), name="instalment_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(currency__in=Currency.values), name="instalment_currency_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(paid_at__isnull=False),
                name="instalment_paid_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="due"), name="instalment_due"),
        ]

    def __str__(self) -> str:
        return f"{self.label} {self.money}"

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    @property
    def outstanding(self) -> int:
        return max(self.amount - self.amount_paid, 0)

    @property
    def overpaid(self) -> int:
        return max(self.amount_paid - self.amount, 0)

    def is_overdue(self, now: datetime | None = None) -> bool:
        return (
            self.status == InstalmentStatus.DUE
            and self.due_at is not None
            and self.due_at < (now or timezone.now())
        )


class DocumentKind(models.TextChoices):
    INVOICE = "invoice", _("Invoice")
    RECEIPT = "receipt", _("Receipt")
    CREDIT_NOTE = "credit_note", _("Credit note")


class DocumentSequence(models.Model):
    """The last number given per kind and year; locked to number documents without gaps."""

    kind = models.CharField(max_length=12, choices=DocumentKind.choices)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "year"], name="document_sequence_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.year}: {self.last_number}"


class BillingDocument(models.Model):
    """An invoice (for an instalment), a receipt (for a payment) or a credit note (for a
    refund): numbered once, its figures frozen when issued, its PDF built by a worker.
    ``tax_lines`` holds, per rate, the taxable total and the tax it includes."""

    number = models.CharField(_("number"), max_length=30, unique=True)
    kind = models.CharField(_("kind"), max_length=12, choices=DocumentKind.choices)
    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="documents")
    instalment = models.ForeignKey(
        Instalment, on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    refund = models.ForeignKey(
        Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    total_amount = models.BigIntegerField(_("total (minor units)"))
    tax_lines = models.JSONField(_("tax lines"), default=list, blank=True)
    seller_registration_number = models.CharField(
        _("seller's registration number"), max_length=20, blank=True
    )
    buyer_name = models.CharField(_("issued to"), max_length=200)
    issued_at = models.DateTimeField(_("issued at"), default=timezone.now)
    pdf = models.BinaryField(null=True, blank=True, editable=False)
    emailed_at = models.DateTimeField(_("e-mailed at"), null=True, blank=True)

    class Meta:
        ordering = ["-issued_at", "-pk"]
        verbose_name = _("billing document")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=DocumentKind.values), name="document_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(total_amount__gte=0), name="document_total_non_negative"
            ),
            # One invoice per instalment, one receipt per payment, one credit note per refund,
            # however often the handler that issues it runs.
            models.UniqueConstraint(
                fields=["instalment"],
                condition=Q(kind="invoice"),
                name="one_invoice_per_instalment",
            ),
            models.UniqueConstraint(
                fields=["payment"], condition=Q(kind="receipt"), name="one_receipt_per_payment"
            ),
            models.UniqueConstraint(
                fields=["refund"],
                condition=Q(kind="credit_note"),
                name="one_credit_note_per_refund",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def total(self) -> Money:
        return Money(self.total_amount, self.currency)


# --- mission operations: manifests, schedule-change offers, waitlists, reseller webhooks ----


class ManifestVersion(models.Model):
    """One stored version of a mission's payload manifest. ``content`` is the whole manifest
    (lines and totals) as built; ``digest`` is its SHA-256, so rebuilding an unchanged state
    writes no new version."""

    mission = models.ForeignKey(
        "marketplace.Mission", on_delete=models.CASCADE, related_name="manifest_versions"
    )
    number = models.PositiveIntegerField(_("version"))
    content = models.JSONField(_("content"))
    digest = models.CharField(max_length=64)
    trigger = models.CharField(_("built because"), max_length=200, blank=True)
    frozen = models.BooleanField(_("frozen at the booking cutoff"), default=False)
    pdf = models.FileField(_("PDF"), upload_to="manifests/", blank=True)
    created_at = models.DateTimeField(_("built at"), default=timezone.now)

    class Meta:
        ordering = ["mission", "-number"]
        verbose_name = _("manifest version")
        constraints = [
            models.UniqueConstraint(fields=["mission", "number"], name="manifest_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="manifest_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.mission_id} manifest v{self.number}"


class ManifestDelivery(models.Model):
    """Who received which manifest version, when."""

    version = models.ForeignKey(
        ManifestVersion, on_delete=models.CASCADE, related_name="deliveries"
    )
    recipient = models.EmailField(_("recipient"))
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        ordering = ["-sent_at"]
        verbose_name = _("manifest delivery")
        constraints = [
            models.UniqueConstraint(
                fields=["version", "recipient"], name="manifest_delivery_once_per_recipient"
            ),
        ]

    def __str__(self) -> str:
        return f"v{self.version_id} → {self.recipient}"


class OfferStatus(models.TextChoices):
    OPEN = "open", _("Open")
    STAYED = "stayed", _("Stays on the mission")
    MOVED = "moved", _("Moved to another mission")
    CANCELLED = "cancelled", _("Cancelled with a full refund")
    DEFAULTED = "defaulted", _("Unanswered: stays on the mission")


class ReaccommodationOffer(models.Model):
    """After a schedule change, each affected booking's choice: stay, move to another
    mission with room (capacity taken when accepted), or cancel with a full refund."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="offers")
    schedule_change = models.ForeignKey(
        "marketplace.ScheduleChange", on_delete=models.CASCADE, related_name="offers"
    )
    status = models.CharField(
        _("status"), max_length=12, choices=OfferStatus.choices, default=OfferStatus.OPEN
    )
    deadline = models.DateTimeField(_("answer by"))
    target_slot_class = models.ForeignKey(
        SlotClass,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("moved to"),
    )
    answered_at = models.DateTimeField(_("answered at"), null=True, blank=True)
    answered_by = models.CharField(_("answered by"), max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("re-accommodation offer")
        constraints = [
            models.UniqueConstraint(
                fields=["booking", "schedule_change"], name="offer_once_per_change"
            ),
            models.CheckConstraint(
                condition=Q(status__in=OfferStatus.values), name="offer_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="moved") | Q(target_slot_class__isnull=False),
                name="offer_move_has_target",
            ),
        ]
        indexes = [
            models.Index(fields=["deadline"], condition=Q(status="open"), name="offer_open_due")
        ]

    def __str__(self) -> str:
        return f"offer for {self.booking_id}: {self.status}"


class WaitlistStatus(models.TextChoices):
    WAITING = "waiting", _("Waiting")
    OFFERED = "offered", _("Offered a hold")
    BOOKED = "booked", pgettext_lazy("waitlist status", "Booked")
    LAPSED = "lapsed", _("Offer lapsed")
    WITHDRAWN = "withdrawn", _("Withdrawn")


class WaitlistEntry(models.Model):
    """A request for capacity in a sold-out class. Freed capacity goes to the first entries
    that fit, in order, as an offer hold (``offer_booking``) with its own expiry."""

    slot_class = models.ForeignKey(SlotClass, on_delete=models.CASCADE, related_name="waitlist")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="waitlist_entries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    mass_g = models.PositiveIntegerField(_("mass (g)"))
    quantity = models.PositiveIntegerField(_("quantity"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    status = models.CharField(
        _("status"),
        max_length=12,
        choices=WaitlistStatus.choices,
        default=WaitlistStatus.WAITING,
    )
    offer_booking = models.OneToOneField(
        Booking, on_delete=models.SET_NULL, null=True, blank=True, related_name="waitlist_entry"
    )
    offered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("waitlist entry")
        verbose_name_plural = _("waitlist entries")
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=WaitlistStatus.values), name="waitlist_status_valid"
            ),
            models.CheckConstraint(condition=Q(mass_g__gt=0), name="waitlist_mass_positive"),
        ]
        indexes = [
            models.Index(
                fields=["slot_class", "created_at"],
                condition=Q(status="waiting"),
                name="waitlist_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"waitlist {self.slot_class_id} #{self.pk}: {self.status}"


class WebhookEndpoint(models.Model):
    """A URL a reseller registered to receive its booking events, signed with HMAC-SHA256
    under ``secret``; disabled after repeated failure."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(_("URL"), max_length=500)
    secret = models.CharField(_("signing secret"), max_length=100, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["organisation", "pk"]
        verbose_name = _("webhook endpoint")

    def __str__(self) -> str:
        return self.url


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")


class WebhookDelivery(models.Model):
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(
        BookingEvent, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    status = models.CharField(
        max_length=10,
        choices=WebhookDeliveryStatus.choices,
        default=WebhookDeliveryStatus.PENDING,
    )
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event"], name="webhook_delivery_once_per_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id}: {self.status}"
