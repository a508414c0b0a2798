"""
Probes and scrapes arrive by IP over plain HTTP (a load balancer's health check,
Kubernetes, Prometheus): neither the Host header nor the scheme is the site's. This
middleware, first in the chain, answers those paths before host validation and the
HTTPS redirect; every other request goes through Django's checks as usual.
"""

from django.urls import resolve

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


class ProbeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info in PROBE_PATHS:
            return resolve(request.path_info).func(request)
        return self.get_response(request)
