"""Included at ``/api/v1/`` by ``config.urls``."""

from django.urls import URLPattern, URLResolver, path

from marketplace.api import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("missions/", views.MissionListView.as_view(), name="api-mission-list"),
    path("missions/<str:code>/", views.MissionDetailView.as_view(), name="api-mission-detail"),
]
