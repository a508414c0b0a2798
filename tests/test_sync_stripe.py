"""`sync_stripe` mirrors what Stripe holds into the database."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
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
