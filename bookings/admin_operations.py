"""Back office for mission operations: manifest versions (read-only, downloads, the diff with
the previous version), who received them, and the mission actions that go through
``bookings.mission_ops`` and ``bookings.manifests`` (never a field assigned here).

Registered by importing this module from ``bookings.admin``; the Mission admin imports the
contact inline and the two actions from here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import IntegerField, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from accounts.roles import CHANGE_MISSION_STATUS
from bookings.exceptions import BookingError
from bookings.manifests import (
    manifest_csv,
    manifest_diff,
    manifest_filename,
    manifest_json,
    manifest_previous,
    manifest_request_rebuild,
)
from bookings.mission_ops import mission_set_status
from bookings.models import ManifestDelivery, ManifestVersion
from bookings.services import Actor
from marketplace.models import Mission, MissionContact, MissionStatus

DOWNLOADS = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
}


class _RecordAdmin(admin.ModelAdmin):
    """What the system recorded: read, never written or removed by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MissionContactInline(admin.TabularInline):
    model = MissionContact
    extra = 0
    fields = ("name", "email", "role", "receives_manifests")


@admin.register(ManifestVersion)
class ManifestVersionAdmin(_RecordAdmin):
    list_display = (
        "mission",
        "number",
        "created_at",
        "trigger",
        "frozen",
        "line_count",
        "alert_count",
        "downloads",
    )
    list_filter = ("frozen", "mission")
    list_select_related = ("mission",)
    search_fields = ("mission__code", "trigger", "digest")
    date_hierarchy = "created_at"
    fields = (
        "mission",
        "number",
        "created_at",
        "trigger",
        "frozen",
        "digest",
        "downloads",
        "summary",
        "alerts_display",
        "diff_display",
        "deliveries_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ManifestVersion]:
        # A version's content holds every line (megabytes for a big mission): the list reads
        # only the counts it shows, inside the database.
        return (
            super()
            .get_queryset(request)
            .defer("content")
            .annotate(
                line_count=Cast(KT("content__totals__lines"), IntegerField()),
                alert_count=Cast(KT("content__totals__alerts"), IntegerField()),
            )
        )

    @admin.display(description=_("lines"), ordering="line_count")
    def line_count(self, obj: ManifestVersion) -> int:
        return int(getattr(obj, "line_count", 0) or 0)

    @admin.display(description=_("alerts"), ordering="alert_count")
    def alert_count(self, obj: ManifestVersion) -> SafeString | int:
        count = int(getattr(obj, "alert_count", 0) or 0)
        if count:
            return format_html('<strong style="color:#b00">{}</strong>', count)
        return 0

    @admin.display(description=_("download"))
    def downloads(self, obj: ManifestVersion) -> SafeString:
        links = []
        for fmt in DOWNLOADS:
            if fmt == "pdf" and not obj.pdf:
                links.append(format_html("<span>{}</span>", _("PDF rendering…")))
                continue
            url = reverse("admin:bookings_manifestversion_download", args=[obj.pk, fmt])
            links.append(format_html('<a href="{}">{}</a>', url, fmt.upper()))
        return format_html_join(" · ", "{}", ((link,) for link in links))

    @admin.display(description=_("totals"))
    def summary(self, obj: ManifestVersion) -> SafeString:
        totals = obj.content["totals"]
        rows = [
            (
                cls["name"],
                cls["manifested_g"],
                cls["capacity_g"],
                cls["lines"],
            )
            for cls in obj.content["classes"]
        ]
        rows.append(
            (str(_("Lander")), totals["mass_g"], totals["lander_capacity_g"], totals["lines"])
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{} g</td><td>{} g</td><td>{}</td></tr>",
            rows,
        )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
            "<tbody>{}</tbody></table><p>{}</p>",
            _("class"),
            _("manifested"),
            _("capacity"),
            _("lines"),
            body,
            _("cleared %(cleared)s · under review %(review)s · rejected %(rejected)s")
            % {
                "cleared": totals["cleared"],
                "review": totals["under_review"],
                "rejected": totals["rejected"],
            },
        )

    @admin.display(description=_("alerts"))
    def alerts_display(self, obj: ManifestVersion) -> SafeString | str:
        alerts = obj.content.get("alerts") or []
        if not alerts:
            return "—"
        items = format_html_join("", "<li>{}</li>", ((a["message"],) for a in alerts))
        return format_html('<ul style="color:#b00;font-weight:bold">{}</ul>', items)

    @admin.display(description=_("changes since the previous version"))
    def diff_display(self, obj: ManifestVersion) -> SafeString:
        previous = manifest_previous(obj)
        diff = manifest_diff(previous.content if previous else None, obj.content)
        from django.template.loader import render_to_string

        return SafeString(
            render_to_string("manifests/admin/diff.html", {"diff": diff, "previous": previous})
        )

    @admin.display(description=_("delivered to"))
    def deliveries_display(self, obj: ManifestVersion) -> SafeString | str:
        deliveries = list(obj.deliveries.order_by("recipient"))
        if not deliveries:
            return "—"
        return format_html_join(
            "", "<div>{} · {}</div>", ((d.recipient, d.sent_at) for d in deliveries)
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/download/<str:fmt>/",
                self.admin_site.admin_view(self.download_view),
                name="bookings_manifestversion_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponseBase:
        if fmt not in DOWNLOADS or not self.has_view_permission(request):
            raise Http404
        version = (
            ManifestVersion.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        )
        if version is None:
            raise Http404
        filename = manifest_filename(version, fmt)
        if fmt == "pdf":
            if not version.pdf:
                raise Http404(_("The PDF of this version is still being rendered."))
            return FileResponse(
                version.pdf.open("rb"),
                as_attachment=True,
                filename=filename,
                content_type=DOWNLOADS[fmt],
            )
        data = manifest_json(version) if fmt == "json" else manifest_csv(version)
        response = HttpResponse(data, content_type=DOWNLOADS[fmt])
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


@admin.register(ManifestDelivery)
class ManifestDeliveryAdmin(_RecordAdmin):
    list_display = ("version", "recipient", "sent_at")
    list_select_related = ("version__mission",)
    list_filter = ("version__mission",)
    search_fields = ("recipient", "version__mission__code")


# --- actions on the Mission admin --------------------------------------------------------


@admin.action(description=_("Rebuild the manifest now"), permissions=["change"])
def mission_rebuild_manifest(
    modeladmin: admin.ModelAdmin[Mission], request: HttpRequest, queryset: QuerySet[Mission]
) -> None:
    codes = []
    for mission in queryset.order_by("pk"):
        with transaction.atomic():
            manifest_request_rebuild(
                mission_id=mission.pk, reason=f"rebuilt by {request.user}", immediate=True
            )
        codes.append(mission.code)
    modeladmin.message_user(
        request,
        _(
            "Manifest rebuild asked for %(codes)s. A new version appears only if something "
            "changed since the last one."
        )
        % {"codes": ", ".join(codes)},
        messages.SUCCESS,
    )


class MissionStatusForm(forms.Form):
    status = forms.ChoiceField(label=_("new status"), choices=MissionStatus.choices)
    reason = forms.CharField(
        label=_("reason"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Recorded on every live booking and sent to the customers."),
    )


@admin.action(description=_("Change the mission status…"), permissions=["change_status"])
def mission_change_status(
    modeladmin: admin.ModelAdmin[Mission], request: HttpRequest, queryset: QuerySet[Mission]
) -> TemplateResponse | None:
    # Offered only with the permission (MissionAdmin.has_change_status_permission); this
    # refuses a forced POST too.
    if not request.user.has_perm(CHANGE_MISSION_STATUS):
        raise PermissionDenied
    form = MissionStatusForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        for mission in queryset.order_by("pk"):
            try:
                mission_set_status(
                    mission_id=mission.pk,
                    status=form.cleaned_data["status"],
                    actor=actor,
                    reason=form.cleaned_data["reason"],
                )
            except BookingError as error:
                modeladmin.message_user(request, error.message, messages.ERROR)
            else:
                modeladmin.message_user(
                    request,
                    _("%(code)s is now %(status)s.")
                    % {
                        "code": mission.code,
                        "status": MissionStatus(form.cleaned_data["status"]).label,
                    },
                    messages.SUCCESS,
                )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Change the mission status"),
        "missions": list(queryset.order_by("pk")),
        "form": form,
        "opts": modeladmin.model._meta,
        "action_name": "mission_change_status",
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
    }
    return TemplateResponse(request, "manifests/admin/mission_status_form.html", context)
