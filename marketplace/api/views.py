"""The public catalogue of the reseller API: ``GET /missions/`` and ``GET /missions/{code}/``.

Anyone may call them (throttled per IP by the default throttles); a key, when sent, must be
valid (401 ``authentication_failed`` otherwise, from ``ApiKeyAuthentication``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny

from config.api import validated_query
from config.schema import error_responses
from marketplace.api.serializers import MissionListQuerySerializer, MissionSerializer
from marketplace.cache import catalogue_cached
from marketplace.models import Mission
from marketplace.selectors import mission_detail, mission_list

_CODE_MAX_LENGTH = Mission._meta.get_field("code").max_length or 0


class CatalogueCachedMixin:
    """The body of a successful answer comes from the catalogue cache (``marketplace.cache``),
    keyed by the full URL (pagination links name the host); errors are never cached. Runs
    after DRF's authentication, throttles and content negotiation, like any handler."""

    def cached_json(self, request: Any, name: str, build: Any) -> HttpResponse:
        renderer = request.accepted_renderer

        def render() -> bytes:
            data = build().data
            body: bytes = renderer.render(data, request.accepted_media_type, {"request": request})
            return body

        body = catalogue_cached(name, (request.build_absolute_uri(),), render)
        content_type = renderer.media_type
        if renderer.charset:
            content_type += f"; charset={renderer.charset}"
        return HttpResponse(body, content_type=content_type)


class MissionListView(CatalogueCachedMixin, generics.ListAPIView[Mission]):
    permission_classes = [AllowAny]
    serializer_class = MissionSerializer
    # The one filter is validated by MissionListQuerySerializer, which also documents it.
    filter_backends: list[Any] = []

    @extend_schema(
        operation_id="missions_list",
        summary="Missions not completed or failed, soonest launch first",
        tags=["missions"],
        parameters=[MissionListQuerySerializer],
        responses={
            200: OpenApiResponse(MissionSerializer(many=True), description="A page of missions."),
            **error_responses("invalid"),
        },
    )
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self.cached_json(
            request, "api-missions", lambda: self.list(request, *args, **kwargs)
        )

    def get_queryset(self) -> QuerySet[Mission]:
        query = validated_query(MissionListQuerySerializer, self.request)
        return mission_list(status=query.get("status"))


class MissionDetailView(CatalogueCachedMixin, generics.RetrieveAPIView[Mission]):
    permission_classes = [AllowAny]
    serializer_class = MissionSerializer
    filter_backends: list[Any] = []

    @extend_schema(
        operation_id="missions_retrieve",
        summary="One mission, whatever its status",
        tags=["missions"],
        parameters=[
            OpenApiParameter(
                "code", str, OpenApiParameter.PATH, description="The mission's code, e.g. M3."
            )
        ],
        responses={
            200: OpenApiResponse(MissionSerializer, description="The mission."),
            **error_responses("not_found"),
        },
    )
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self.cached_json(
            request, "api-mission", lambda: self.retrieve(request, *args, **kwargs)
        )

    def get_object(self) -> Mission:
        code: str = self.kwargs["code"]
        # PostgreSQL refuses a NUL in a query parameter with an error (a 500), and no stored
        # code is longer than the column: neither can name a mission.
        if "\x00" in code or len(code) > _CODE_MAX_LENGTH:
            raise NotFound(_("No mission has this code."))
        try:
            return mission_detail(code=code)
        except Mission.DoesNotExist:
            raise NotFound(_("No mission has this code.")) from None
