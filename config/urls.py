from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from bookings import admin_statements, admin_views
from config.health import healthz

api_v1: list[URLPattern | URLResolver] = [
    path("", include("marketplace.api.urls")),
    path("", include("bookings.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file, so the CSP needs no
    # 'unsafe-inline' for it.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path(
        "admin/dashboard/",
        admin.site.admin_view(admin_views.dashboard),
        name="backoffice_dashboard",
    ),
    path(
        "admin/audit-log/",
        admin.site.admin_view(admin_views.audit_log),
        name="backoffice_audit_log",
    ),
    # Sales' enterprise holds and their completion links (bookings.admin_enterprise).
    path("admin/enterprise-holds/", include("bookings.admin_enterprise")),
    path(
        "admin/statements/",
        admin.site.admin_view(admin_statements.statements_view),
        name="backoffice_statements",
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include(api_v1)),
    path("", include("bookings.payment_urls")),
    path("", include("bookings.urls")),
    path("", include("marketplace.urls")),
]
