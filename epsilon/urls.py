from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # dj-stripe's webhook endpoint: /stripe/webhook/<uuid>/ (signature verified).
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    # The embedded meter's OpenMeter-compatible API (POST /api/v1/events, meter queries).
    path("api/v1/", include("embedded_meter.urls")),
]
