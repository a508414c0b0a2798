"""
Mirror Stripe objects into the database: dj-stripe's models for products, prices,
customers and subscriptions; our Meter model for billing meters.
"""

from dataclasses import dataclass, field

from django.conf import settings
from djstripe import models as djstripe_models

from .. import stripe_api
from ..models import Meter, WindowSize


def sync_meter(stripe_meter, *, source_meter_slug: str | None = None) -> Meter:
    """Upsert a Stripe billing meter; keeps the operator's source slug and window size."""
    mirrored = {
        "livemode": bool(stripe_meter.livemode),
        "display_name": stripe_meter.display_name,
        "event_name": stripe_meter.event_name,
        "status": stripe_meter.status,
        "aggregation_formula": stripe_meter.default_aggregation.formula,
        "customer_payload_key": stripe_meter.customer_mapping.event_payload_key,
        "value_payload_key": stripe_meter.value_settings.event_payload_key,
    }
    if mirrored["status"] == Meter.Status.ACTIVE:
        # Stripe allows one active meter per event name: any other we mirror as active
        # is stale (deactivated in Stripe, or from another account or emulator state).
        Meter.objects.filter(
            livemode=mirrored["livemode"], event_name=mirrored["event_name"], status=Meter.Status.ACTIVE
        ).exclude(id=stripe_meter.id).update(status=Meter.Status.INACTIVE)
    meter, created = Meter.objects.get_or_create(
        id=stripe_meter.id,
        defaults={
            **mirrored,
            "source_meter_slug": source_meter_slug or settings.EPSILON["SOURCE_METER_SLUG"],
            "window_size": WindowSize(settings.EPSILON["DEFAULT_WINDOW_SIZE"].upper()),
        },
    )
    if not created:
        for name, value in mirrored.items():
            setattr(meter, name, value)
        meter.save()
    return meter


def _mirror(model):
    """A function that upserts a Stripe object into dj-stripe's `model`."""

    def sync(stripe_object):
        return model.sync_from_stripe_data(stripe_object, api_key=settings.STRIPE_SECRET_KEY)

    sync.__name__ = f"sync_{model.__name__.lower()}"
    return sync


sync_product = _mirror(djstripe_models.Product)
sync_price = _mirror(djstripe_models.Price)
sync_customer = _mirror(djstripe_models.Customer)
sync_subscription = _mirror(djstripe_models.Subscription)


@dataclass
class SyncCounts:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


def sync_all(*, client=None, on_synced=None) -> SyncCounts:
    """Pull meters, products, prices, customers and subscriptions from Stripe."""
    client = client or stripe_api.get_client()
    v1 = client.v1
    sources = [
        ("meter", v1.billing.meters, {}, sync_meter),
        ("product", v1.products, {}, sync_product),
        ("price", v1.prices, {}, sync_price),
        ("customer", v1.customers, {}, sync_customer),
        ("subscription", v1.subscriptions, {"status": "all"}, sync_subscription),
    ]
    result = SyncCounts()
    for kind, service, params, sync in sources:
        for stripe_object in service.list({"limit": 100, **params}).auto_paging_iter():
            sync(stripe_object)
            result.add(kind)
            if on_synced:
                on_synced(kind, stripe_object.id)
    return result
