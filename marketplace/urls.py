from django.urls import URLPattern, URLResolver, path

from marketplace import views

app_name = "marketplace"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.mission_list, name="mission-list"),
    # A slug keeps stray bytes (NUL, slashes) out of the lookup; unknown codes answer 404.
    path("missions/<slug:code>/", views.mission_detail, name="mission-detail"),
]
