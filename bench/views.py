"""The baseline endpoints: what the stack itself costs, with no database and no work.

``BaselineView`` is the reference of every ratio: the simplest DRF endpoint, an ``APIView``
returning a constant behind the project's middleware and JSON renderer, with no
authentication or throttle classes (as PERFORMANCE.md's "bare DRF APIView"). The API-key
authentication and the throttles are Moonslot's own choices, with their own cost (the
throttles read and write the cache, Redis in production, on every request), so they count
against the product, not the stack. ``DefaultsBaselineView`` is the same view with the
project's defaults, measured beside it so that cost shows on its own row.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

PAYLOAD = {"ok": True, "service": "moonslot", "purpose": "benchmark baseline"}


class BaselineView(APIView):
    authentication_classes: list[Any] = []
    throttle_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response(PAYLOAD)

    # POST answers the same without reading the body, so the sale-opening client can measure
    # its own ceiling with requests shaped like its holds.
    def post(self, request: Request) -> Response:
        return Response(PAYLOAD)


class DefaultsBaselineView(APIView):
    """The project's default authentication and throttle classes, nothing else."""

    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response(PAYLOAD)
