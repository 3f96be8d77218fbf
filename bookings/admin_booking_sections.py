"""The read-only sections of the booking's admin page: payments and refunds, instalments,
billing documents, the payload review with its history, and the booking's lines in each
manifest version.

One query per section, whatever the booking's history holds: refunds come in one query for
all payments, and the manifest lines are picked out of each version's JSON by the database
(``ManifestLineOf``), so a mission's thousands of lines never travel for one booking. Links
to other admin pages are resolved with ``admin_url``, which answers None when that page
does not exist (a model not registered, a role that may not open it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import NotSupportedError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BooleanField,
    ExpressionWrapper,
    F,
    Func,
    JSONField,
    Q,
    Value,
    prefetch_related_objects,
)
from django.db.models.sql.compiler import SQLCompiler
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from bookings.models import (
    BillingDocument,
    Booking,
    BookingEvent,
    EventType,
    Instalment,
    ManifestVersion,
    PayloadDeclaration,
    Payment,
    Refund,
)
from bookings.plans import booking_money_summary
from marketplace.money import Money

# Events that record a move to another mission, with the mission left in data["from_mission"].
MOVE_EVENTS = (EventType.OFFER_MOVED, EventType.BOOKING_REBOOKED)
PAYLOAD_EVENT_PREFIX = "payload."


def admin_url(request: HttpRequest, name: str, *args: Any) -> str | None:
    """The URL of admin page ``name``, or None when it does not exist or the user's role may
    not view that model (``name`` like ``"admin:bookings_billingdocument_change"``)."""
    app_model = name.removeprefix("admin:").rsplit("_", 1)[0]
    app_label, _, model = app_model.partition("_")
    if not request.user.has_perm(f"{app_label}.view_{model}"):
        return None
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


class ManifestLineOf(Func):
    """The line of booking ``reference`` in a manifest version's ``content["lines"]`` (a
    JSON object), or NULL when the version does not list it. Written per database: each has
    its own JSON path functions."""

    output_field = JSONField()

    def __init__(self, reference: str) -> None:
        super().__init__(F("content"), Value(reference))

    def _parts(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> Any:
        content, reference = self.get_source_expressions()
        content_sql, content_params = compiler.compile(content)
        reference_sql, reference_params = compiler.compile(reference)
        return content_sql, reference_sql, (*content_params, *reference_params)

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        raise NotSupportedError("manifest lines are read on PostgreSQL and SQLite only")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        content, reference, params = self._parts(compiler, connection)
        sql = (
            f"jsonb_path_query_first({content}, '$.lines[*] ? (@.reference == $ref)', "
            f"jsonb_build_object('ref', ({reference})::text))"
        )
        return sql, params

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        content, reference, params = self._parts(compiler, connection)
        # Only compiled SQL of this expression's own sources is interpolated; values are
        # parameters.
        sql = (
            f"(SELECT line.value FROM json_each({content}, '$.lines') AS line "  # noqa: S608
            f"WHERE json_extract(line.value, '$.reference') = {reference} LIMIT 1)"
        )
        return sql, params


@dataclass
class PaymentRow:
    payment: Payment
    refunds: list[Refund] = field(default_factory=list)


@dataclass
class InstalmentRow:
    instalment: Instalment
    overdue: bool

    @property
    def underpaid(self) -> Money | None:
        """Short when money came in below the amount (a partial payment)."""
        instalment = self.instalment
        if 0 < instalment.amount_paid < instalment.amount:
            return Money(instalment.outstanding, instalment.currency)
        return None

    @property
    def overpaid(self) -> Money | None:
        if self.instalment.overpaid:
            return Money(self.instalment.overpaid, self.instalment.currency)
        return None

    @property
    def paid(self) -> Money:
        return Money(self.instalment.amount_paid, self.instalment.currency)


@dataclass
class DocumentRow:
    document: BillingDocument
    url: str | None
    pdf_url: str | None = None


@dataclass
class ManifestRun:
    """Consecutive versions of one mission's manifest that list the booking with the same
    line: one row for "v3–v9", rather than seven identical ones."""

    mission_code: str
    first: int
    last: int
    last_pk: int
    line: dict[str, Any]
    frozen: bool
    built_at: datetime
    url: str | None = None

    @property
    def versions(self) -> str:
        return f"v{self.first}" if self.first == self.last else f"v{self.first}–v{self.last}"


def _documents(request: HttpRequest, booking: Booking) -> list[DocumentRow]:
    documents = (
        BillingDocument.objects.filter(booking=booking)
        .defer("pdf")  # the PDF's bytes stay in the database; only whether there is one
        .annotate(has_pdf=ExpressionWrapper(Q(pdf__isnull=False), output_field=BooleanField()))
    )
    return [
        DocumentRow(
            document,
            url=admin_url(request, "admin:bookings_billingdocument_change", document.pk),
            pdf_url=admin_url(request, "admin:bookings_billingdocument_pdf", document.pk)
            if document.has_pdf
            else None,
        )
        for document in documents.order_by("issued_at", "pk")
    ]


def _manifest_runs(
    request: HttpRequest, booking: Booking, moved_from: set[str]
) -> list[ManifestRun]:
    versions = (
        ManifestVersion.objects.filter(
            # Through the class's id: no query for the booking's class itself.
            Q(mission__slot_classes__id=booking.slot_class_id) | Q(mission__code__in=moved_from)
        )
        .annotate(line=ManifestLineOf(booking.reference))
        .order_by("mission__code", "number")
        .values("pk", "number", "frozen", "created_at", "mission__code", "line")
    )
    runs: list[ManifestRun] = []
    for version in versions:
        line = version["line"]
        if not line:
            continue
        previous = runs[-1] if runs else None
        if (
            previous is not None
            and previous.mission_code == version["mission__code"]
            and previous.last + 1 == version["number"]
            and previous.line == line
        ):
            previous.last, previous.last_pk = version["number"], version["pk"]
            previous.frozen = previous.frozen or version["frozen"]
            continue
        runs.append(
            ManifestRun(
                mission_code=version["mission__code"],
                first=version["number"],
                last=version["number"],
                last_pk=version["pk"],
                line=line,
                frozen=version["frozen"],
                built_at=version["created_at"],
            )
        )
    for run in runs:
        run.url = admin_url(request, "admin:bookings_manifestversion_change", run.last_pk)
    runs.reverse()  # newest first, as the page reads
    return runs


def booking_sections(request: HttpRequest, booking: Booking) -> dict[str, Any]:
    """The context of the booking page's sections (see the module's docstring)."""
    now = timezone.now()
    events = BookingEvent.objects.filter(
        Q(type__startswith=PAYLOAD_EVENT_PREFIX) | Q(type__in=MOVE_EVENTS), booking=booking
    ).order_by("created_at", "pk")
    review_history: list[BookingEvent] = []
    moved_from: set[str] = set()
    for event in events:
        if event.type in MOVE_EVENTS:
            code = (event.data or {}).get("from_mission")
            if isinstance(code, str):
                moved_from.add(code)
        else:
            review_history.append(event)
    try:
        declaration: PayloadDeclaration | None = booking.payload
    except PayloadDeclaration.DoesNotExist:
        declaration = None
    # The money summary reads these through .all(): one query each, shared with the rows.
    prefetch_related_objects([booking], "instalments", "payments__refunds")
    summary = booking_money_summary(booking, now=now)
    payments = sorted(booking.payments.all(), key=lambda payment: payment.attempt)
    return {
        "section_money": summary,
        "section_payments": [
            PaymentRow(payment, sorted(payment.refunds.all(), key=lambda r: (r.created_at, r.pk)))
            for payment in payments
        ],
        "section_instalments": [
            InstalmentRow(instalment, overdue=instalment.is_overdue(now))
            for instalment in summary.instalments
        ],
        "section_documents": _documents(request, booking),
        "section_declaration": declaration,
        "section_review_history": review_history,
        "section_manifest_runs": _manifest_runs(request, booking, moved_from),
    }
