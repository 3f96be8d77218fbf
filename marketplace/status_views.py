"""The public status page of a mission: where it stands, its launch window and slips, and the
timeline of its status changes."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from bookings.mission_ops import mission_status_timeline
from marketplace.models import Mission


def mission_status(request: HttpRequest, code: str) -> HttpResponse:
    try:
        mission = Mission.objects.select_related("lander").get(code=code.upper())
    except Mission.DoesNotExist:
        raise Http404(_("No mission has that code.")) from None
    timeline = mission_status_timeline(mission)
    context = {
        "mission": mission,
        "timeline": timeline,
        # A change recorded on no booking (none were live) leaves only the status itself.
        "current_unrecorded": not timeline or timeline[-1]["to"] != mission.status,
        "schedule_changes": list(mission.schedule_changes.order_by("announced_at", "pk")),
    }
    return render(request, "marketplace/mission_status.html", context)
