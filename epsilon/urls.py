from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from billing.views import event_destination

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # dj-stripe's webhook endpoint: /stripe/webhook/<uuid>/ (signature verified).
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    # Stripe's event destination for thin events (meter error reports), signed.
    path("stripe/events/", event_destination, name="stripe-event-destination"),
    # The embedded meter's OpenMeter-compatible API (POST /api/v1/events, meter queries).
    path("api/v1/", include("embedded_meter.urls")),
    # Health probes and the Prometheus scrape (ops/urls.py).
    path("", include("ops.urls")),
]
