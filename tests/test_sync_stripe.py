"""`sync_stripe` mirrors what Stripe holds into the database."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from djstripe import models as djstripe_models

from billing import stripe_api
from billing.models import Meter

pytestmark = pytest.mark.django_db


def test_sync_pulls_objects_created_outside_the_app(stripe_emulated):
    client = stripe_api.get_client().v1
    meter = client.billing.meters.create(
        {
            "display_name": "Other meter",
            "event_name": "other_usage",
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = client.products.create({"name": "Other product"})
    price = client.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "2.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    customers = [client.customers.create({"email": f"c{n}@example.com"}) for n in range(3)]
    subscription = client.subscriptions.create(
        {"customer": customers[0].id, "items": [{"price": price.id}]}
    )

    out = StringIO()
    call_command("sync_stripe", stdout=out)

    assert "1 meter(s), 1 product(s), 1 price(s), 3 customer(s), 1 subscription(s)" in out.getvalue()
    assert Meter.objects.get().id == meter.id
    assert Decimal(djstripe_models.Price.objects.get().unit_amount_decimal) == Decimal("2.5")
    assert set(djstripe_models.Customer.objects.values_list("id", flat=True)) == {c.id for c in customers}
    item = djstripe_models.SubscriptionItem.objects.get()
    assert item.subscription_id == subscription.id
    # Current API versions keep the billing period on the item; reporting reads it there.
    assert item.stripe_data["current_period_end"] > item.stripe_data["current_period_start"]


def test_sync_is_idempotent(stripe_emulated):
    client = stripe_api.get_client().v1
    client.customers.create({"email": "once@example.com"})
    call_command("sync_stripe", stdout=StringIO())
    call_command("sync_stripe", stdout=StringIO())
    assert djstripe_models.Customer.objects.count() == 1


def test_a_new_active_meter_supersedes_a_stale_mirrored_one(stripe_emulated):
    Meter.objects.create(
        id="mtr_test_FromAnotherAccount0000000000", display_name="old", event_name="epsilon_execution_duration",
        source_meter_slug="m1", status="active",
    )
    call_command("epsilon_setup", stdout=StringIO())
    statuses = dict(Meter.objects.values_list("id", "status"))
    assert statuses.pop("mtr_test_FromAnotherAccount0000000000") == "inactive"
    assert list(statuses.values()) == ["active"]


MIRRORED = (djstripe_models.Customer, djstripe_models.Subscription, djstripe_models.SubscriptionItem)
# The row's own bookkeeping: its autoincrement key and when it was written.
BOOKKEEPING = {"djstripe_id", "djstripe_created", "djstripe_updated"}


def mirror_rows() -> dict:
    """Every column of every mirrored customer, subscription and item, by Stripe id."""
    rows = {
        model.__name__: {
            row["id"]: {k: v for k, v in row.items() if k not in BOOKKEEPING}
            for row in model.objects.values()
        }
        for model in MIRRORED
    }
    through = djstripe_models.SubscriptionItem.tax_rates.through.objects
    rows["item tax rates"] = sorted(through.values_list("subscriptionitem__id", "taxrate__id"))
    return rows


def sync_each_with_dj_stripe():
    """The reference: dj-stripe's own sync, one object at a time (the path before bulk)."""
    from billing.services import stripe_sync

    v1 = stripe_api.get_client().v1
    for customer in v1.customers.list({"limit": 100}).auto_paging_iter():
        stripe_sync.sync_customer(customer)
    for subscription in v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter():
        stripe_sync.sync_subscription(subscription)


def metered_price(client):
    meter = client.billing.meters.create(
        {"display_name": "M", "event_name": "m_usage", "default_aggregation": {"formula": "sum"}}
    )
    product = client.products.create({"name": "P"})
    return client.prices.create(
        {
            "product": product.id, "currency": "usd", "unit_amount_decimal": "2.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )


def test_the_bulk_mirror_writes_the_rows_dj_stripe_writes(stripe_emulated, django_user_model):
    client = stripe_api.get_client().v1
    price = metered_price(client)
    other = client.prices.create(
        {"product": price.product, "currency": "usd", "unit_amount": 7, "recurring": {"interval": "month"}}
    )
    user = django_user_model.objects.create(username="subscriber")
    customers = [
        client.customers.create({"email": "a@example.com", "metadata": {"plan": "gold"}}),
        client.customers.create({}),  # no email: "" in the mirror
        client.customers.create({"email": "s@example.com", "metadata": {"djstripe_subscriber": str(user.pk)}}),
    ]
    client.subscriptions.create({"customer": customers[0].id, "items": [{"price": price.id}, {"price": other.id}]})
    canceled = client.subscriptions.create({"customer": customers[1].id, "items": [{"price": price.id}]})
    client.subscriptions.cancel(canceled.id)
    client.subscriptions.create({"customer": customers[2].id, "items": [{"price": price.id}]})
    call_command("sync_stripe", stdout=StringIO())  # meters, products and prices
    for model in MIRRORED:
        model.objects.all().delete()

    sync_each_with_dj_stripe()
    reference = mirror_rows()
    for model in MIRRORED:
        model.objects.all().delete()
    call_command("sync_stripe", stdout=StringIO())

    assert mirror_rows() == reference
    assert len(reference["SubscriptionItem"]) == 4
    assert djstripe_models.Customer.objects.get(id=customers[2].id).subscriber == user

    # Updates: Stripe changed; the bulk path updates the rows as dj-stripe would.
    client.customers.update(customers[0].id, {"email": "new@example.com", "metadata": {"plan": "silver"}})
    live = client.subscriptions.list({"customer": customers[0].id}).data[0]
    client.subscriptions.update(live.id, {"items": [{"id": live["items"].data[1].id, "deleted": True}]})
    call_command("sync_stripe", stdout=StringIO())
    updated = mirror_rows()
    sync_each_with_dj_stripe()
    assert mirror_rows() == updated
    assert updated["Customer"][customers[0].id]["email"] == "new@example.com"


def test_sync_lists_a_page_per_100_objects_and_asks_nothing_per_object(stripe_emulated, monkeypatch):
    client = stripe_api.get_client().v1
    price = metered_price(client)
    for n in range(120):
        customer = client.customers.create({"email": f"c{n}@example.com"})
        client.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    before = len(stripe_emulated.requests())
    owner_lookups = []
    for model in (djstripe_models.Customer, djstripe_models.Subscription):
        find = model._find_owner_account
        monkeypatch.setattr(model, "_find_owner_account", lambda *a, _find=find, **kw: owner_lookups.append(1) or _find(*a, **kw))

    out = StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("sync_stripe", stdout=out)

    assert "120 customer(s), 120 subscription(s)" in out.getvalue()
    # New rows go in by INSERT ... VALUES: Django's bulk_create sends PostgreSQL a column
    # as one array (UNNEST), which psycopg escapes in Python character by character.
    assert not [q["sql"] for q in queries if "UNNEST(" in q["sql"].upper()]
    # The owner account (a savepoint and three queries) is looked up once per run, not per page.
    assert len(owner_lookups) == 1
    requests = [(r["method"], r["path"]) for r in stripe_emulated.requests()[before:]]
    assert requests.count(("GET", "/v1/customers")) == 2
    assert requests.count(("GET", "/v1/subscriptions")) == 2
    per_object = [r for r in requests if r[1].startswith(("/v1/customers/", "/v1/subscriptions/", "/v1/prices/", "/v1/subscription_items"))]
    assert per_object == []
    # The rest: meters, products (and each product's features), prices, the account.
    assert len(requests) <= 10
    assert djstripe_models.SubscriptionItem.objects.filter(price__id=price.id).count() == 120


def test_what_the_bulk_path_cannot_resolve_goes_through_dj_stripe(stripe_emulated):
    from billing.services import stripe_mirror, stripe_sync

    client = stripe_api.get_client().v1
    price = metered_price(client)
    customer = client.customers.create({"email": "late@example.com"})
    subscription = client.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    call_command("sync_stripe", stdout=StringIO())
    item = djstripe_models.SubscriptionItem.objects.values().get()
    djstripe_models.Price.objects.filter(id=price.id).delete()  # and, with it, the item
    assert not djstripe_models.SubscriptionItem.objects.exists()

    by_dj_stripe = []

    def sync_one(stripe_subscription):
        by_dj_stripe.append(stripe_subscription.id)
        stripe_sync.sync_subscription(stripe_subscription)

    page = client.subscriptions.list({"limit": 100}).data
    stripe_mirror.mirror_subscriptions(page, sync_one=sync_one, after=lambda *_: None)

    # The item's price was not mirrored: dj-stripe made it from the item's embedded price.
    assert by_dj_stripe == [subscription.id]
    again = djstripe_models.SubscriptionItem.objects.values().get()
    assert djstripe_models.Price.objects.get(id=price.id).pk == again["price_id"]
    changed = {"price_id"} | BOOKKEEPING
    assert {k: v for k, v in again.items() if k not in changed} == {k: v for k, v in item.items() if k not in changed}


def test_a_resync_rewrites_what_changed_and_stamps_every_row(stripe_emulated):
    """Unchanged rows are not rewritten (IS DISTINCT FROM), yet get djstripe_updated as dj-stripe's save."""
    client = stripe_api.get_client().v1
    price = metered_price(client)
    customers = [client.customers.create({"email": f"r{n}@example.com"}) for n in range(3)]
    for customer in customers:
        client.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    call_command("sync_stripe", stdout=StringIO())
    before = mirror_rows()
    stamps = {
        model: dict(model.objects.values_list("id", "djstripe_updated")) for model in MIRRORED
    }
    client.customers.update(customers[1].id, {"email": "changed@example.com"})

    call_command("sync_stripe", stdout=StringIO())

    after = mirror_rows()
    assert after["Customer"][customers[1].id]["email"] == "changed@example.com"
    after["Customer"][customers[1].id] = before["Customer"][customers[1].id]
    assert after == before  # nothing else changed
    for model in MIRRORED:
        for stripe_id, stamp in model.objects.values_list("id", "djstripe_updated"):
            assert stamp > stamps[model][stripe_id]
