"""
Mirror Stripe objects into the database: dj-stripe's models for products, prices,
customers and subscriptions; our Meter model for billing meters.

A full sync reads Stripe's lists a page of 100 at a time and asks Stripe nothing a list
already answered; customers and subscriptions (the many) are written a page at a time
by stripe_mirror, exactly as dj-stripe's per-object sync (used for single objects and
what the bulk path leaves to it) would write them.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone
from djstripe import models as djstripe_models

from .. import stripe_api
from ..conf import conf
from ..models import Meter, SubscriptionItemChange, WindowSize
from . import stripe_mirror


def sync_meter(stripe_meter, *, source_meter_slug: str | None = None) -> Meter:
    """Upsert a Stripe billing meter; keeps the operator's source slug and window size."""
    mirrored = {
        "livemode": bool(stripe_meter.livemode),
        "display_name": stripe_meter.display_name,
        "event_name": stripe_meter.event_name,
        "status": stripe_meter.status,
        "aggregation_formula": stripe_meter.default_aggregation.formula,
        "event_time_window": getattr(stripe_meter, "event_time_window", None) or "",
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
            "source_meter_slug": source_meter_slug or conf.SOURCE_METER_SLUG,
            "window_size": WindowSize(conf.DEFAULT_WINDOW_SIZE.upper()),
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
_sync_subscription = _mirror(djstripe_models.Subscription)


def sync_subscription(stripe_subscription):
    """
    Upsert a subscription, and record what dj-stripe's mirror cannot show: items Stripe
    no longer lists (removed or replaced) and items whose price was replaced.
    """
    before = dict(
        djstripe_models.SubscriptionItem.objects.filter(subscription__id=stripe_subscription["id"])
        .values_list("id", "price__id")
    )
    subscription = _sync_subscription(stripe_subscription)
    record_item_changes(stripe_subscription, before, at=None)
    return subscription


def record_item_changes(stripe_subscription, before: dict[str, str], *, at) -> list[SubscriptionItemChange]:
    """
    Compare Stripe's current items with `before` (item id -> price id): record each
    removal and price replacement once, at `at` (an event's time, which wins over a
    guess made earlier) or, when unknown, when a new item was created, else now.
    """
    current = {i["id"]: i for i in (stripe_subscription.get("items") or {}).get("data", [])}
    added = [i for item_id, i in current.items() if item_id not in before]
    changes = []
    for item_id, price_id in before.items():
        item = current.get(item_id)
        if item is None:
            when = at or _created(added) or timezone.now()
            changes.append((item_id, SubscriptionItemChange.Kind.REMOVED, when, price_id, ""))
        elif price_id and price_id_of(item) != price_id:
            changes.append((item_id, SubscriptionItemChange.Kind.PRICE, at or timezone.now(), price_id, price_id_of(item)))
    return [
        _record(item_id, stripe_subscription["id"], kind, when, old, new, authoritative=at is not None)
        for item_id, kind, when, old, new in changes
    ]


def _record(item_id, subscription_id, kind, at, old_price, new_price, *, authoritative):
    change, created = SubscriptionItemChange.objects.get_or_create(
        item_id=item_id, kind=kind, new_price_id=new_price,
        defaults={"subscription_id": subscription_id, "old_price_id": old_price, "at": at},
    )
    if not created and authoritative and change.at != at:
        change.at = at
        change.save(update_fields=["at"])
    return change


def _created(items):
    created = [i.get("created") for i in items if i.get("created")]
    return datetime.fromtimestamp(min(created), UTC) if created else None


def price_id_of(item) -> str:
    """An item's price id, whether the price is expanded (a Stripe object) or an id."""
    price = item.get("price")
    if price is None or isinstance(price, str):
        return price or ""
    return price["id"]


@dataclass
class SyncCounts:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


PAGE_SIZE = 100  # Stripe's largest list page


def list_pages(service, params: dict):
    """
    Every page of a Stripe list (a ListObject: iterate it for its objects), each fetched
    while the caller writes the one before (one request ahead: the list is still read
    in order, one page at a time).
    """
    yield from _pipelined(
        lambda after: service.list({"limit": PAGE_SIZE, **params, **after}),
        lambda page: page.data[-1].id if page.has_more and page.data else None,
    )


def list_raw_pages(client, path: str, params: dict):
    """
    Every page of a Stripe list as Stripe sent it (the parsed JSON: `data`, `has_more`),
    fetched as list_pages does. Not stripe-python's objects: building them for a page of
    100 subscriptions (with their items and prices) costs about ten times parsing its
    JSON, in the thread that shares the interpreter with the writing. The bulk mirror
    reads the plain dicts (stripe_mirror.with_data); what goes to dj-stripe one object at
    a time is made a Stripe object first (`as_stripe_object`).
    """
    yield from _pipelined(
        lambda after: client.raw_request("get", path, **{"limit": PAGE_SIZE, **params, **after}).data,
        lambda page: page["data"][-1]["id"] if page.get("has_more") and page.get("data") else None,
    )


def _pipelined(fetch, cursor):
    """Pages `fetch({"starting_after": ...})` while the caller handles the one before."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stripe-list") as pool:
        pending = pool.submit(fetch, {})
        while pending is not None:
            page = pending.result()
            after = cursor(page)
            pending = pool.submit(fetch, {"starting_after": after}) if after is not None else None
            yield page


def as_stripe_object(client, data):
    """A plain dict from a raw page as the Stripe object stripe-python's list would have made."""
    return client.deserialize(data, api_mode="V1") if isinstance(data, dict) else data


def _record_changes(stripe_subscription, before):
    record_item_changes(stripe_subscription, before, at=None)


def sync_all(*, client=None, on_synced=None) -> SyncCounts:
    """
    Pull meters, products, prices, customers and subscriptions from Stripe: one list
    request per 100 objects (subscriptions come with their items and prices), written a
    page at a time (stripe_mirror) from the pages' JSON (list_raw_pages); the few meters,
    products and prices one by one.
    """
    client = client or stripe_api.get_client()
    v1 = client.v1
    cache = stripe_mirror.RunCache()  # what every page refers to alike, read once per run
    one_by_one = [
        ("meter", v1.billing.meters, {}, sync_meter),
        ("product", v1.products, {}, sync_product),
        ("price", v1.prices, {}, sync_price),
    ]
    by_page = [
        (
            "customer", "/v1/customers", {},
            lambda page: stripe_mirror.mirror_customers(
                page, sync_one=lambda data: sync_customer(as_stripe_object(client, data)), cache=cache
            ),
        ),
        (
            "subscription", "/v1/subscriptions", {"status": "all"},
            lambda page: stripe_mirror.mirror_subscriptions(
                page, sync_one=lambda data: sync_subscription(as_stripe_object(client, data)),
                after=_record_changes, cache=cache,
            ),
        ),
    ]
    result = SyncCounts()
    for kind, service, params, sync in one_by_one:
        for page in list_pages(service, params):
            for stripe_object in page:
                sync(stripe_object)
                result.add(kind)
                if on_synced:
                    on_synced(kind, stripe_object.id)
    for kind, path, params, mirror in by_page:
        for page in list_raw_pages(client, path, params):
            ids = mirror(page)
            result.add(kind, len(ids))
            if on_synced:
                for stripe_id in ids:
                    on_synced(kind, stripe_id)
    return result
