"""
Where meter definitions come from: the database (editable in the admin) and the
EMBEDDED_METERS setting (OpenMeter-shaped dicts), both read at query time. A database
row wins over a setting with the same slug. Without the setting, the default Epsilon
meter `m1` is defined, so a fresh database (or a test database) can meter at once;
migration 0002 also seeds it into the database so operators can edit it.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from .models import MeterDefinition

DEFAULT_METERS = [
    {
        "slug": "m1",
        "name": "Epsilon execution duration",
        "description": "Billed execution time of Epsilon functions: whole seconds, each execution rounded up.",
        "eventType": "epsilon.execution",
        "aggregation": "SUM",
        "valueProperty": "$.billed_seconds",
        # Minutes, as OpenMeter keeps usage: billing reads partial first and last windows
        # (where service began or ended) by the minute, whole periods by the hour.
        "windowSize": "MINUTE",
    }
]


def configured_meters() -> dict[str, MeterDefinition]:
    """The meters of settings.EMBEDDED_METERS (default: DEFAULT_METERS), validated."""
    meters = {}
    for spec in getattr(settings, "EMBEDDED_METERS", DEFAULT_METERS):
        try:
            meter = MeterDefinition.from_openmeter(spec)
            meter.clean_fields()
            meter.clean()
        except (KeyError, TypeError, ValidationError) as exc:
            raise ImproperlyConfigured(f"EMBEDDED_METERS: invalid meter {spec!r}: {exc}") from exc
        meters[meter.slug] = meter
    return meters


def all_meters() -> dict[str, MeterDefinition]:
    """Every meter by slug: one query."""
    meters = configured_meters()
    meters.update({m.slug: m for m in MeterDefinition.objects.all()})
    return meters


def get_meter(slug: str) -> MeterDefinition | None:
    meter = MeterDefinition.objects.filter(slug=slug).first()
    return meter or configured_meters().get(slug)


_ORDER_BY = {
    "key": lambda m: m.slug,
    "name": lambda m: m.name or m.slug,
    "aggregation": lambda m: m.aggregation,
    # Meters of EMBEDDED_METERS have no timestamps: they sort first.
    "createdAt": lambda m: (m.created_at is not None, m.created_at or 0),
    "updatedAt": lambda m: (m.updated_at is not None, m.updated_at or 0),
}


def list_meters(*, order_by: str = "key", descending: bool = False, page: int = 1, page_size: int = 100) -> list[MeterDefinition]:
    """listMeters: every meter, ordered (ties by slug, then reversed for DESC), one page."""
    meters = sorted(all_meters().values(), key=lambda m: m.slug)
    meters.sort(key=_ORDER_BY[order_by], reverse=descending)
    return meters[(page - 1) * page_size : page * page_size]
