"""Domain errors of the booking engine. Each has a machine ``code`` (the API's error code)
and a message for a person; views, the admin and the API map them, never re-derive them."""

from __future__ import annotations


class BookingError(Exception):
    code = "booking_error"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BookingValidationError(BookingError):
    """Input outside the class's limits; ``fields`` maps dotted paths to messages."""

    code = "invalid"

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        first = next(iter(fields.values()))[0] if fields else "Invalid booking."
        super().__init__(first)


class InsufficientCapacity(BookingError):
    code = "insufficient_capacity"

    def __init__(self, *, available_g: int, available_units: int | None = None) -> None:
        self.available_g = available_g
        self.available_units = available_units
        if available_units is not None:
            message = f"Not enough room left in this class: {available_units} units available."
        else:
            message = f"Not enough room left in this class: {available_g} g available."
        super().__init__(message)


class SalesClosed(BookingError):
    code = "sales_closed"


class ChannelNotAllowed(BookingError):
    code = "channel_not_allowed"


class CurrencyNotOffered(BookingError):
    code = "currency_not_offered"


class HoldLimitExceeded(BookingError):
    code = "hold_limit_exceeded"


class CreditLimitExceeded(BookingError):
    code = "credit_limit_exceeded"


class HoldExpired(BookingError):
    code = "hold_expired"


class InvalidTransition(BookingError):
    code = "invalid_state"

    def __init__(self, *, from_status: str, to_status: str, message: str | None = None) -> None:
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(message or f"This booking is {from_status} and cannot become {to_status}.")


class ContractNotAccepted(InvalidTransition):
    """An enterprise hold (one with a completion link) whose customer has not accepted the
    contract terms yet: it cannot be confirmed (``bookings.enterprise``)."""

    def __init__(self, message: str) -> None:
        super().__init__(from_status="held", to_status="confirmed", message=message)


class ScreeningReview(BookingError):
    """The customer matched the denied-party list: the booking stays held (its hold
    extended) until sales clear or deny it (``bookings.screening``); it is not confirmed."""

    code = "screening_review"


class TransientError(Exception):
    """A failure worth retrying (network, broker); tasks autoretry on it."""
