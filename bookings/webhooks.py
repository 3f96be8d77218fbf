"""The Stripe webhook: verify, record once, queue the work, answer quickly.

Stripe retries a delivery that is not answered 2xx, for days, so the answer must mean "we have
it": the event row and its outbox row commit together before the 200, and the processing
runs after the commit (``bookings.payments.handle_stripe_event``). Anything that does not
verify is answered 400 and changes nothing.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bookings import gateways, payments

logger = logging.getLogger(__name__)


@csrf_exempt  # Stripe cannot send our CSRF token; the signature authenticates it instead
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    # An oversized body never gets here: Django answers 400 past DATA_UPLOAD_MAX_MEMORY_SIZE.
    try:
        event = gateways.webhook_event(request.body, request.headers.get("Stripe-Signature"))
    except gateways.InvalidWebhook as exc:
        logger.info("stripe webhook refused: %s", exc)
        return HttpResponse(status=400)
    payments.stripe_event_receive(event)
    return HttpResponse(status=200)
