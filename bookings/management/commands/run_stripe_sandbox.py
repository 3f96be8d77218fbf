"""Run localstripe, a fake Stripe API, on 127.0.0.1 for development and tests.

localstripe is GPL-3.0 and a dev-only dependency: it is imported only inside the process this
module starts (``serve``), never by the site. The site talks to it over HTTP exactly as it
talks to Stripe, through ``settings.STRIPE_API_BASE``.

The launcher closes a few gaps between localstripe and the real API, so the code under test
is the code that runs against Stripe (nothing in the site is bent to the fake):

- the store is kept in memory (the stock server pickles it to a fixed file on every write);
- ``Idempotency-Key`` is honoured for POSTs, as Stripe does for 24 hours;
- a card PaymentMethod can be created from a Stripe.js token (``card[token]=tok_…``);
- a manual-capture PaymentIntent that authorises sends ``payment_intent.amount_capturable_updated``
  and a cancelled one sends ``payment_intent.canceled``;
- a declined confirmation names its PaymentIntent in the error body.

``python manage.py run_stripe_sandbox`` also registers this site's webhook URL with its secret;
``python -m bookings.management.commands.run_stripe_sandbox --port N`` serves without Django
(tests start it that way, see ``tests/stripe_fake.py``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

DEFAULT_PORT = 12111
WEBHOOK_PATH = "/stripe/webhook/"


def build_app() -> Any:
    """localstripe's aiohttp application with the gaps above closed."""
    from aiohttp import web
    from localstripe import resources, server
    from localstripe.errors import UserError

    resources.Store.dump_to_disk = lambda self: None

    _accept_card_tokens(resources)
    cancel_intent = _send_authorisation_events(resources)
    _name_the_intent_in_declines(resources, UserError)

    replies: dict[str, tuple[int, bytes]] = {}

    @web.middleware
    async def idempotency(request: Any, handler: Any) -> Any:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        scoped = f"{request.path}:{key}"
        if scoped in replies:
            status, body = replies[scoped]
            return web.Response(status=status, body=body, content_type="application/json")
        response = await handler(request)
        # Stripe keeps the outcome of a request that ran, errors included (a 402 decline),
        # but not a request refused before it ran.
        if response.status < 500 and response.status not in (400, 401, 404, 409):
            replies[scoped] = (response.status, response.body)
        return response

    async def flush(request: Any) -> Any:
        resources.store.clear()
        replies.clear()
        return web.Response()

    app = server.app
    # The idempotency layer sits outside localstripe's own error handling, so it sees the
    # final response of every request.
    app.middlewares.insert(0, idempotency)
    # Routes were bound to localstripe's functions when it was imported; swap the two whose
    # behaviour changes here.
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "DELETE" and canonical == "/_config/data":
            route._handler = flush  # the remembered replies are data too
        elif route.method == "POST" and canonical == "/v1/payment_intents/{id}/cancel":
            route._handler = server.api_extra(cancel_intent, canonical)
    return app


def _accept_card_tokens(resources: Any) -> None:
    original = resources.PaymentMethod.__init__

    def init(self: Any, type: Any = None, card: Any = None, **kwargs: Any) -> None:
        if type == "card" and isinstance(card, dict) and set(card) == {"token"}:
            token = resources.Token._api_retrieve(card["token"])
            number = token.card._card_number
            card = {
                "number": number,
                "exp_month": token.card.exp_month,
                "exp_year": token.card.exp_year,
                "cvc": "123",
            }
        original(self, type=type, card=card, **kwargs)

    resources.PaymentMethod.__init__ = init


def _send_authorisation_events(resources: Any) -> Any:
    """Patch the authorisation event in; return the cancel endpoint to route to."""
    intent_cls = resources.PaymentIntent
    original_create_charge = intent_cls._create_charge
    original_cancel = intent_cls._api_cancel

    def create_charge(self: Any, on_failure_now: Any) -> None:
        original_create_charge(self, on_failure_now)
        if self.status == "requires_capture":
            resources.schedule_webhook(
                resources.Event("payment_intent.amount_capturable_updated", self)
            )

    def cancel(id: Any, **kwargs: Any) -> Any:
        intent = original_cancel(id, **kwargs)
        resources.schedule_webhook(resources.Event("payment_intent.canceled", intent))
        return intent

    intent_cls._create_charge = create_charge
    return cancel


def _name_the_intent_in_declines(resources: Any, user_error: Any) -> None:
    intent_cls = resources.PaymentIntent

    def report_failure(self: Any) -> None:
        resources.schedule_webhook(resources.Event("payment_intent.payment_failed", self))
        charge = self.latest_charge
        raise user_error(
            402,
            charge.failure_message,
            {
                "code": charge.failure_code,
                "decline_code": "generic_decline",
                "charge": charge.id,
                "payment_intent": {"id": self.id, "object": "payment_intent"},
                "type": "card_error",
            },
        )

    intent_cls._report_failure = report_failure


def register_webhook(url: str, secret: str, name: str = "moonslot") -> None:
    from localstripe.webhooks import register_webhook as register

    register(name, url, secret, None)


def serve(*, port: int, webhook_url: str | None = None, webhook_secret: str | None = None) -> None:
    """Serve until interrupted, on the loopback interface only."""
    from aiohttp import web

    app = build_app()
    if webhook_url and webhook_secret:
        register_webhook(webhook_url, webhook_secret)
    print(json.dumps({"localstripe": f"http://127.0.0.1:{port}"}), flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Command(BaseCommand):
    help = "Run a local fake Stripe API (localstripe) and send its webhooks to this site."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument(
            "--site-url",
            default=settings.SITE_URL,
            help="Where the site runs; webhooks are posted to <site-url>/stripe/webhook/.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            import localstripe  # noqa: F401
        except ImportError:
            self.stderr.write("localstripe is not installed: pip install -e '.[dev]'")
            raise SystemExit(1) from None
        port: int = options["port"]
        webhook_url = options["site_url"].rstrip("/") + WEBHOOK_PATH
        secret = settings.STRIPE_WEBHOOK_SECRET
        self.stdout.write(
            f"Fake Stripe on http://127.0.0.1:{port} — webhooks to {webhook_url}\n"
            f"Point the site at it with STRIPE_API_BASE=http://127.0.0.1:{port}"
        )
        serve(port=port, webhook_url=webhook_url, webhook_secret=secret or None)


def main() -> None:
    parser = argparse.ArgumentParser(description="localstripe on 127.0.0.1, for tests")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret")
    args = parser.parse_args()
    serve(port=args.port, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret)


if __name__ == "__main__":
    main()
