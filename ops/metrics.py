"""Placeholder: filled by the metrics work."""
from django.http import HttpResponse


def metrics_view(request):
    return HttpResponse("", content_type="text/plain")
