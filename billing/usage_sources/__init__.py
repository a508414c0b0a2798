"""Usage sources: where the reporting engine reads metered usage from."""

from django.conf import settings
from django.utils.module_loading import import_string

from .base import UsageRequest, UsageSource, UsageSourceError

__all__ = ["UsageRequest", "UsageSource", "UsageSourceError", "get_usage_source"]

SOURCES = {
    "embedded": "billing.usage_sources.embedded.EmbeddedUsageSource",
    "openmeter": "billing.usage_sources.openmeter.OpenMeterUsageSource",
}


def get_usage_source() -> UsageSource:
    """The source chosen by settings.USAGE_SOURCE ("embedded" or "openmeter")."""
    return import_string(SOURCES[settings.USAGE_SOURCE])()
