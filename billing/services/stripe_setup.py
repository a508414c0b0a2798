"""
Create, or find on a rerun, the Stripe objects Epsilon bills with.

Every object is looked up before it is created, by something that stays put across
runs (the meter's event name, the price's lookup_key, the product's and customer's
metadata) and through list endpoints, which unlike Stripe's search are
read-after-write consistent: a rerun never creates a duplicate.
"""

from dataclasses import dataclass
from decimal import Decimal


from .. import stripe_api, stripe_dashboard
from ..conf import conf
from ..errors import BillingError
from . import meter_rules, stripe_sync

PRODUCT_METADATA = {"epsilon_object": "product"}
DEMO_CUSTOMER_METADATA = {"epsilon_demo": "true"}


class SetupError(BillingError):
    """A Stripe object exists but does not fit Epsilon; nothing is changed."""


@dataclass(frozen=True)
class EnsuredObject:
    kind: str
    stripe_id: str
    created: bool
    livemode: bool

    @property
    def dashboard_url(self) -> str:
        return stripe_dashboard.url_for(self.stripe_id, self.livemode)

    def describe(self) -> str:
        verb = "created" if self.created else "already exists"
        return f"Stripe {self.kind} {verb}: {self.dashboard_url or self.stripe_id}"


def _ensured(kind, stripe_object, created) -> EnsuredObject:
    return EnsuredObject(kind, stripe_object.id, created, bool(stripe_object.livemode))


def _first(page, predicate=lambda obj: True):
    return next((obj for obj in page.auto_paging_iter() if predicate(obj)), None)


def _has_metadata(obj, metadata: dict) -> bool:
    return all((obj.metadata or {}).get(k) == v for k, v in metadata.items())


def ensure_meter(client):
    meter = _first(
        client.v1.billing.meters.list({"status": "active", "limit": 100}),
        lambda m: m.event_name == conf.METER_EVENT_NAME,
    )
    if meter:
        problem = meter_rules.problem_of_stripe_meter(meter)
        if problem:
            raise SetupError(problem)
        return meter, False
    meter = client.v1.billing.meters.create(
        {
            "display_name": conf.METER_DISPLAY_NAME,
            "event_name": conf.METER_EVENT_NAME,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    return meter, True


def ensure_price(client, meter):
    """The monthly metered price, found by lookup_key, with its product."""
    price = _first(
        client.v1.prices.list(
            {"lookup_keys": [conf.PRICE_LOOKUP_KEY], "expand": ["data.product"]}
        )
    )
    if price:
        _check_price_fits(price, meter)
        return price, price.product, False, False

    product, product_created = ensure_product(client)
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": conf.PRICE_CURRENCY,
            "unit_amount_decimal": str(conf.PRICE_UNIT_AMOUNT_DECIMAL),
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "lookup_key": conf.PRICE_LOOKUP_KEY,
            "nickname": "Epsilon execution duration, monthly",
        }
    )
    return price, product, True, product_created


def ensure_product(client):
    product = _first(
        client.v1.products.list({"limit": 100}),
        lambda p: _has_metadata(p, PRODUCT_METADATA),
    )
    if product:
        return product, False
    product = client.v1.products.create(
        {
            "name": conf.PRODUCT_NAME,
            "description": "Serverless executions, billed by execution duration.",
            "metadata": PRODUCT_METADATA,
        }
    )
    return product, True


def _check_price_fits(price, meter) -> None:
    recurring = price.recurring or {}
    expected = {
        "active": (price.active, True),
        "currency": (price.currency, conf.PRICE_CURRENCY),
        "unit_amount_decimal": (
            Decimal(str(price.unit_amount_decimal)),
            Decimal(conf.PRICE_UNIT_AMOUNT_DECIMAL),
        ),
        "recurring.interval": (recurring.get("interval"), "month"),
        "recurring.usage_type": (recurring.get("usage_type"), "metered"),
        "recurring.meter": (recurring.get("meter"), meter.id),
    }
    wrong = [f"{name} is {got!r}, expected {want!r}" for name, (got, want) in expected.items() if got != want]
    if wrong:
        raise SetupError(
            f"The price with lookup_key {conf.PRICE_LOOKUP_KEY!r} ({price.id}) does not fit "
            f"Epsilon: {'; '.join(wrong)}. Fix or archive it in Stripe, or set "
            "EPSILON_PRICE_LOOKUP_KEY to use another lookup key."
        )


def ensure_demo_customer(client):
    email = conf.DEMO_CUSTOMER_EMAIL
    customer = _first(
        client.v1.customers.list({"email": email, "limit": 100}),
        lambda c: _has_metadata(c, DEMO_CUSTOMER_METADATA),
    )
    if customer:
        return customer, False
    customer = client.v1.customers.create(
        {"name": "Epsilon demo customer", "email": email, "metadata": DEMO_CUSTOMER_METADATA}
    )
    return customer, True


def ensure_subscription(client, customer, price):
    subscription = _first(
        client.v1.subscriptions.list(
            {"customer": customer.id, "price": price.id, "status": "active", "limit": 100}
        )
    )
    if subscription:
        return subscription, False
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "metadata": {"epsilon_demo": "true"}}
    )
    return subscription, True


def ensure_epsilon_objects(*, demo_customer: bool = False, client=None) -> list[EnsuredObject]:
    """Make sure Stripe has everything Epsilon needs; mirror it into the database."""
    client = client or stripe_api.get_client()
    meter, meter_created = ensure_meter(client)
    price, product, price_created, product_created = ensure_price(client, meter)

    stripe_sync.sync_meter(meter)
    stripe_sync.sync_product(product)
    stripe_sync.sync_price(price)
    ensured = [
        _ensured("meter", meter, meter_created),
        _ensured("product", product, product_created),
        _ensured("price", price, price_created),
    ]
    if demo_customer:
        customer, customer_created = ensure_demo_customer(client)
        subscription, subscription_created = ensure_subscription(client, customer, price)
        stripe_sync.sync_customer(customer)
        stripe_sync.sync_subscription(subscription)
        ensured += [
            _ensured("customer", customer, customer_created),
            _ensured("subscription", subscription, subscription_created),
        ]
    return ensured
