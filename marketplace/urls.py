from django.urls import URLPattern, URLResolver, path

from marketplace import status_views, views

app_name = "marketplace"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.mission_list, name="mission-list"),
    # A slug keeps stray bytes (NUL, slashes) out of the lookup; unknown codes answer 404.
    path("missions/<slug:code>/", views.mission_detail, name="mission-detail"),
    path("missions/<slug:code>/status/", status_views.mission_status, name="mission-status"),
]
