"""
Probe and scrape endpoints. They answer over plain HTTP even when the site redirects
to HTTPS (settings.SECURE_REDIRECT_EXEMPT): load balancers and Prometheus do not speak
TLS to the pod. None needs a login; none says anything secret.
"""

from django.urls import path

from . import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
