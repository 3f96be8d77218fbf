"""The baseline endpoints: what the stack itself costs, with no database and no work.

``BaselineView`` is a plain DRF ``APIView`` with the project's defaults (every middleware,
API-key authentication, the per-IP and per-key throttles, the JSON renderer), which is what
every product API view pays before doing its own work: the ratio of a scenario to it is the
share of the stack's limit the product keeps. ``BareBaselineView`` drops authentication and
throttling, so the gap between the two shows what those cost.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

PAYLOAD = {"ok": True, "service": "moonslot", "purpose": "benchmark baseline"}


class BaselineView(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response(PAYLOAD)

    # POST answers the same without reading the body, so the sale-opening client can measure
    # its own ceiling with requests shaped like its holds.
    def post(self, request: Request) -> Response:
        return Response(PAYLOAD)


class BareBaselineView(BaselineView):
    authentication_classes: list[Any] = []
    throttle_classes: list[Any] = []
