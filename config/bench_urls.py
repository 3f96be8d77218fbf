"""The product's URLs plus the benchmark's baseline endpoints. Only the servers that
``python -m bench`` starts use it (``bench/settings.py`` selects it); production and the tests
keep ``config.urls``, so the baseline is never part of the product."""

from django.urls import URLPattern, URLResolver, include, path

from bench.views import BaselineView, DefaultsBaselineView

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/_bench/baseline/", BaselineView.as_view(), name="bench-baseline"),
    path(
        "api/v1/_bench/baseline-defaults/",
        DefaultsBaselineView.as_view(),
        name="bench-baseline-defaults",
    ),
    path("", include("config.urls")),
]
