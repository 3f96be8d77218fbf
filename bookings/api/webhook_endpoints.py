"""Reseller webhook URLs in the reseller API (an extension of shared/API.md):

- ``POST /api/v1/webhooks/`` registers an HTTPS URL; the answer shows its signing secret,
  the only time it is shown;
- ``GET /api/v1/webhooks/`` and ``GET /api/v1/webhooks/{endpoint_id}/``: the key's own URLs,
  whether they are active and how many deliveries failed in a row;
- ``DELETE /api/v1/webhooks/{endpoint_id}/`` removes one (204);
- ``POST /api/v1/webhooks/{endpoint_id}/enable/`` turns a URL disabled after repeated
  failure back on; what happened meanwhile is delivered then, in order.

Every event of the key's events feed is POSTed to each active URL (``bookings.webhooks_out``
says how: body, signature, order, retries).
"""

from __future__ import annotations

from typing import Any, cast

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from bookings import webhooks_out
from bookings.api.serializers import DocumentedSerializer, StrictCharField, StrictSerializer
from bookings.api.views import IDEMPOTENCY_PARAMETERS, WRITE_ERRORS, ResellerApiView
from bookings.api.waitlist import path_id
from bookings.models import WebhookEndpoint
from config.schema import error_responses
from marketplace.api.serializers import UtcDateTimeField

DELIVERY_DESCRIPTION = (
    "Each event of your events feed is POSTed as JSON, exactly as GET /events/ shows it "
    "({id, type, booking, created_at, data}), in feed order, with the headers "
    "Moonslot-Event-Id (the event's id: drop a duplicate) and Moonslot-Signature: "
    "t=<unix seconds>,v1=<hex> where v1 is the HMAC-SHA256, keyed with the secret, of "
    '"<t>.<body>" (refuse a t more than 5 minutes old). Answer 2xx within 10 seconds; '
    "anything else is retried after 1, 3, 9, 27 … minutes (8 attempts over about 18 hours), "
    "and later events wait behind it. After 20 failed attempts in a row the URL is "
    "disabled and your notification address is e-mailed."
)


@extend_schema_serializer(component_name="WebhookEndpointCreate")
class WebhookEndpointInputSerializer(StrictSerializer):
    url = StrictCharField(
        max_length=500,
        help_text="An https:// URL on the public internet (at most 500 characters).",
    )


@extend_schema_serializer(component_name="WebhookEndpointEnable")
class WebhookEndpointEnableInputSerializer(StrictSerializer):
    """No fields: a body-less request counts as ``{}``."""


class WebhookEndpointSerializer(DocumentedSerializer[WebhookEndpoint]):
    id = serializers.IntegerField()
    url = serializers.CharField()
    is_active = serializers.BooleanField(help_text="False once disabled after failures.")
    consecutive_failures = serializers.IntegerField(
        min_value=0, help_text="Failed delivery attempts in a row (a success resets it)."
    )
    disabled_at = UtcDateTimeField(allow_null=True, help_text="When it was disabled, or null.")
    created_at = UtcDateTimeField()


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="The signing secret. Shown in this answer only: keep it safe."
    )


ENDPOINT_PARAMETER = OpenApiParameter(
    "endpoint_id",
    int,
    OpenApiParameter.PATH,
    description="The webhook URL's id. Another organisation's is 404.",
)


class WebhookApiView(ResellerApiView):
    def endpoints(self) -> QuerySet[WebhookEndpoint]:
        return WebhookEndpoint.objects.filter(organisation=self.client.organisation).order_by("pk")

    def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        endpoint = self.endpoints().filter(pk=path_id(endpoint_id)).first()
        if endpoint is None:
            raise exceptions.NotFound(_("No webhook URL has this id."))
        return endpoint


class WebhookEndpointListView(WebhookApiView):
    @extend_schema(
        operation_id="webhooks_list",
        summary="Your organisation's webhook URLs",
        description=DELIVERY_DESCRIPTION,
        tags=["webhooks"],
        responses={200: WebhookEndpointSerializer(many=True), **error_responses("invalid")},
    )
    def get(self, request: Request) -> Response:
        # The base view is typed for bookings; pagination itself does not care.
        page: Any = self.paginate_queryset(cast(Any, self.endpoints()))
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        summary="Register a webhook URL",
        description=(
            "Registers an https:// URL to receive the events written from now on. The answer "
            "holds the signing secret, shown this once. At most 5 URLs per organisation. "
            + DELIVERY_DESCRIPTION
        ),
        tags=["webhooks"],
        request=WebhookEndpointInputSerializer,
        parameters=IDEMPOTENCY_PARAMETERS,
        responses={
            201: WebhookEndpointCreatedSerializer,
            **error_responses("invalid", *WRITE_ERRORS),
        },
    )
    def post(self, request: Request) -> Response:
        return self.idempotent(self._create)

    def _create(self) -> Response:
        serializer = WebhookEndpointInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhooks_out.webhook_endpoint_create(
            organisation=self.client.organisation, url=serializer.validated_data["url"]
        )
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )


class WebhookEndpointDetailView(WebhookApiView):
    @extend_schema(
        operation_id="webhooks_retrieve",
        summary="One of your webhook URLs",
        tags=["webhooks"],
        parameters=[ENDPOINT_PARAMETER],
        responses={200: WebhookEndpointSerializer, **error_responses("not_found")},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        return Response(WebhookEndpointSerializer(self.get_endpoint(endpoint_id)).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        summary="Remove a webhook URL",
        description="Nothing more is sent to it. A removed URL is 404 afterwards.",
        tags=["webhooks"],
        parameters=[ENDPOINT_PARAMETER],
        responses={204: None, **error_responses("not_found")},
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(endpoint_id)
        webhooks_out.webhook_endpoint_delete(endpoint_id=endpoint.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointEnableView(WebhookApiView):
    @extend_schema(
        operation_id="webhooks_enable",
        summary="Turn a disabled webhook URL back on",
        description=(
            "Its failure count starts again at zero, and every event since it stopped is "
            "delivered, in order. Enabling an active URL returns it unchanged. No body is "
            "needed."
        ),
        tags=["webhooks"],
        request=WebhookEndpointEnableInputSerializer,
        parameters=[ENDPOINT_PARAMETER, *IDEMPOTENCY_PARAMETERS],
        responses={
            200: WebhookEndpointSerializer,
            **error_responses("invalid", "not_found", *WRITE_ERRORS),
        },
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        return self.idempotent(lambda: self._enable(endpoint_id))

    def _enable(self, endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(endpoint_id)
        WebhookEndpointEnableInputSerializer(data=self.request.data).is_valid(raise_exception=True)
        endpoint = webhooks_out.webhook_endpoint_enable(endpoint_id=endpoint.pk)
        return Response(WebhookEndpointSerializer(endpoint).data)
