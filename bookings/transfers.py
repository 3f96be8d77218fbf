"""Bank transfers: where customers send them, and sales recording the money received.

A transfer is paid by the customer quoting the booking's payment reference
(``plans.payment_reference_for``) to the account in ``settings.MOONSLOT_BANK_DETAILS``; it is
the only way to pay an amount above Stripe's per-charge limit. When the money shows up on the
bank statement, sales record it (``payment_record_transfer``, from the booking's admin page):

- it becomes a succeeded ``Payment`` (provider ``bank_transfer``) for the instalment sales
  name, or the next one due (the deposit first); on a booking paid in full, for the booking;
- less than the instalment owes leaves it due, showing what is still owed (underpaid); more
  is kept on it and flagged (``payment.overpaid`` event, the booking page and the admin show
  it) for sales to refund or move — never applied to the next instalment silently. Money for
  a plan with nothing left to pay is recorded against no instalment, all of it overpaid;
- the deposit of a held booking, or the full price of a booking paid in full, confirms it
  (``booking_confirm``: the denied-party screening may keep it held for review instead);
- a receipt is queued (``bookings.billing``).

A double submit cannot record one transfer twice: the service refuses a transfer with the
same bank reference and amount as one already recorded for the booking
(``DuplicateTransfer``, which names it). Two genuine transfers that look alike are told apart
by the bank's transaction number in the reference.

Refunds of transfers cannot go through Stripe: a cancellation records them pending
(``payments._refund_locked``) and sales pay them out by transfer, then record that with
``refund_record_paid_out``.

Lock order, as in ``bookings.payments``: booking → instalment → payment.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from bookings import plans
from bookings.billing import documents_queue_for_payment, documents_queue_for_refund
from bookings.exceptions import BookingError
from bookings.locks import booking_qs_for_update
from bookings.models import (
    Booking,
    BookingStatus,
    EventType,
    Instalment,
    InstalmentKind,
    InstalmentStatus,
    Payment,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from bookings.services import Actor, _event, booking_confirm
from marketplace.money import Money

logger = logging.getLogger(__name__)


class TransferRefused(BookingError):
    """The transfer cannot be recorded as given; ``message`` says why, for sales."""

    code = "transfer_refused"


class DuplicateTransfer(TransferRefused):
    """This transfer (same bank reference and amount) is already recorded."""

    code = "duplicate_transfer"

    def __init__(self, message: str, *, existing: Payment) -> None:
        super().__init__(message)
        self.existing = existing


def bank_details() -> str:
    """The account customers pay into, as lines of text (an environment variable may carry
    its line breaks as ``\\n``)."""
    return str(settings.MOONSLOT_BANK_DETAILS).replace("\\n", "\n").strip()


@dataclass(frozen=True)
class TransferOutcome:
    """What recording a transfer did: the payment, the instalment it went to (None on a
    booking paid in full, or when nothing was left to pay), what that instalment or booking
    still owes after it (underpaid) and what went beyond (overpaid), and whether it
    confirmed the booking (``not_confirmed`` says why a deposit did not)."""

    payment: Payment
    instalment: Instalment | None
    still_owed: Money
    overpaid: Money
    confirmed: bool
    not_confirmed: str = ""


def _normalised(reference: str) -> str:
    return " ".join(reference.split()).upper()


def _target_instalment(booking: Booking, instalment_id: int | None) -> Instalment | None:
    rows = list(Instalment.objects.select_for_update().filter(booking=booking).order_by("position"))
    if instalment_id is None:
        return plans.next_due_instalment(rows)
    chosen = next((row for row in rows if row.pk == instalment_id), None)
    if chosen is None:
        raise TransferRefused(_("That instalment is not one of this booking's."))
    if chosen.status == InstalmentStatus.CANCELLED:
        raise TransferRefused(_("That instalment is cancelled: nothing is owed on it."))
    return chosen


def payment_record_transfer(
    *,
    booking_id: int,
    amount: int,
    currency: str,
    received_at: datetime,
    bank_reference: str,
    actor: Actor,
    note: str = "",
    instalment_id: int | None = None,
    now: datetime | None = None,
) -> TransferOutcome:
    """Record a bank transfer of ``amount`` minor units received at ``received_at`` for a
    held or confirmed booking (see the module docstring for where the money goes, and how
    under- and overpayments show).

    Raises ``TransferRefused`` for an amount that is not positive, a currency other than the
    booking's, an empty bank reference, a booking that is not held or confirmed (a lapsed
    hold included: place a new hold and record the transfer on it), or an instalment that
    is not the booking's or is cancelled; ``DuplicateTransfer`` when the same bank reference
    and amount are already recorded for the booking (a double submit). The payment, its
    application, the event, any confirmation and the receipt commit together.
    """
    now = now or timezone.now()
    reference = _normalised(bank_reference)
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise TransferRefused(_("The amount received must be more than zero."))
    if not reference:
        raise TransferRefused(_("Give the transfer's reference as it appears on the statement."))
    if received_at > now:
        raise TransferRefused(_("A transfer cannot be received in the future."))
    with transaction.atomic():
        booking = booking_qs_for_update().get(pk=booking_id)
        if currency != booking.currency:
            raise TransferRefused(
                _("This booking is priced in %(currency)s; record the transfer in it.")
                % {"currency": booking.currency}
            )
        status = booking.status_at(now)
        if status not in (BookingStatus.HELD, BookingStatus.CONFIRMED):
            raise TransferRefused(
                _(
                    "This booking is %(status)s, so a transfer cannot pay it. For a lapsed "
                    "hold, place a new hold for the customer and record the transfer there."
                )
                % {"status": BookingStatus(status).label}
            )
        existing = (
            booking.payments.filter(
                provider=PaymentProvider.BANK_TRANSFER, bank_reference=reference, amount=amount
            )
            .order_by("pk")
            .first()
        )
        if existing is not None:
            raise DuplicateTransfer(
                _(
                    "A transfer of %(amount)s with reference %(reference)s is already recorded "
                    "for this booking (on %(when)s). If this is a second transfer, add the "
                    "bank's transaction number to the reference."
                )
                % {
                    "amount": existing.money,
                    "reference": reference,
                    "when": timezone.localtime(existing.created_at).strftime("%Y-%m-%d %H:%M"),
                },
                existing=existing,
            )
        instalment = _target_instalment(booking, instalment_id)
        plans.payment_reference_ensure(booking)
        number = (booking.payments.aggregate(n=Max("attempt"))["n"] or 0) + 1
        payment = Payment.objects.create(
            booking=booking,
            provider=PaymentProvider.BANK_TRANSFER,
            attempt=number,
            instalment=instalment,
            amount=amount,
            currency=currency,
            status=PaymentStatus.SUCCEEDED,
            idempotency_key=f"transfer:{booking.reference}:{number}:{secrets.token_hex(4)}",
            bank_reference=reference,
            note=note,
            created_by=actor.user,
            created_at=now,
            authorised_at=received_at,
            succeeded_at=received_at,
        )
        still_owed, overpaid, covers_confirmation = _apply(booking, payment, instalment, now=now)
        _event(
            booking,
            type=EventType.TRANSFER_RECORDED,
            actor=actor,
            reason=note,
            data={
                "payment_id": payment.pk,
                "instalment_id": instalment.pk if instalment else None,
                "amount": payment.money.as_dict(),
                "bank_reference": reference,
                "received_at": received_at.isoformat(),
                "still_owed": still_owed,
                "overpaid": overpaid,
            },
        )
        if overpaid:
            _event(
                booking,
                type=EventType.PAYMENT_OVERPAID,
                actor=actor,
                reason=_("%(amount)s more than was owed was received; refund or apply it.")
                % {"amount": Money(overpaid, currency)},
                data={"payment_id": payment.pk, "overpaid": overpaid},
            )
        documents_queue_for_payment(payment)
        confirmed, not_confirmed = False, ""
        if covers_confirmation and booking.status == BookingStatus.HELD:
            try:
                booking_confirm(
                    booking_id=booking.pk,
                    actor=actor,
                    reason=f"Bank transfer {reference} received.",
                    now=now,
                )
                confirmed = True
            except BookingError as error:
                # Screening review, most likely: the money is recorded, the booking waits.
                not_confirmed = error.message
    logger.info("transfer recorded for %s: %s", booking.reference, payment.money)
    return TransferOutcome(
        payment=payment,
        instalment=instalment,
        still_owed=Money(still_owed, currency),
        overpaid=Money(overpaid, currency),
        confirmed=confirmed,
        not_confirmed=not_confirmed,
    )


def _apply(
    booking: Booking, payment: Payment, instalment: Instalment | None, *, now: datetime
) -> tuple[int, int, bool]:
    """Count the payment where it belongs. Returns what is still owed there, what went
    beyond it, and whether the booking's confirmation is now paid for."""
    if instalment is not None:
        owed_before = instalment.outstanding
        plans.instalment_apply(instalment, payment, now=now)
        return (
            instalment.outstanding,
            max(payment.amount - owed_before, 0),
            instalment.kind in (InstalmentKind.DEPOSIT, InstalmentKind.FULL)
            and instalment.status == InstalmentStatus.PAID,
        )
    if booking.instalments.exists():
        # A plan with nothing left to pay: all of it is beyond what was owed.
        return 0, payment.amount, False
    received = sum(
        p.amount - p.amount_refunded
        for p in booking.payments.filter(status=PaymentStatus.SUCCEEDED)
    )
    before = received - payment.amount
    owed_before = max(booking.price_amount - before, 0)
    return (
        max(booking.price_amount - received, 0),
        max(payment.amount - owed_before, 0),
        received >= booking.price_amount,
    )


def refund_record_paid_out(
    *, refund_id: int, actor: Actor, bank_reference: str, now: datetime | None = None
) -> Refund:
    """Sales paid a bank-transfer refund (pending since the cancellation) back by transfer:
    mark it done, write the event and queue its credit note. Recording it again changes
    nothing. Raises ``TransferRefused`` for a card refund (Stripe pays those) or a refund
    that failed."""
    now = now or timezone.now()
    with transaction.atomic():
        payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
        payment = Payment.objects.select_related("booking").select_for_update().get(pk=payment_id)
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        if payment.provider != PaymentProvider.BANK_TRANSFER:
            raise TransferRefused(_("Card refunds are paid back through Stripe."))
        if refund.status == RefundStatus.SUCCEEDED:
            return refund
        if refund.status != RefundStatus.PENDING:
            raise TransferRefused(_("Only a pending refund can be recorded as paid."))
        refund.status = RefundStatus.SUCCEEDED
        refund.completed_at = now
        refund.note = "\n".join(filter(None, [refund.note, _normalised(bank_reference)]))
        refund.save(update_fields=["status", "completed_at", "note"])
        _event(
            payment.booking,
            type=EventType.REFUND_PAID_OUT,
            actor=actor,
            reason=_normalised(bank_reference),
            data={"payment_id": payment.pk, "refund_id": refund.pk, "amount": refund.amount},
        )
        documents_queue_for_refund(refund)
    return refund


__all__ = [
    "DuplicateTransfer",
    "TransferOutcome",
    "TransferRefused",
    "bank_details",
    "payment_record_transfer",
    "refund_record_paid_out",
]
