from django.urls import path, re_path

from . import views

app_name = "embedded_meter"

# Mounted at /api/v1/ (epsilon/urls.py), OpenMeter's paths.
urlpatterns = [
    path("events", views.events, name="events"),
    path("meters", views.meters, name="meters"),
    path("meters/<str:slug>", views.meter_detail, name="meter"),
    path("meters/<str:slug>/query", views.meter_query, name="meter-query"),
    # Anything else under /api/v1/ is a problem+json 404, not Django's HTML page.
    re_path(r"^(?P<rest>.*)$", views.not_found, name="not-found"),
]
