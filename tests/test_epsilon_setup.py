"""`epsilon_setup` against the local Stripe emulator: creates each object once, finds it after."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from djstripe import models as djstripe_models

from billing import stripe_api
from billing.models import Meter

pytestmark = pytest.mark.django_db

LINE_RE = re.compile(
    r"^Stripe (?P<kind>meter|product|price|customer|subscription) (?P<verb>created|already exists): "
    r"https://dashboard\.stripe\.com/test/(?P<path>billing/meters|products|prices|customers|subscriptions)/(?P<id>\S+)$"
)


def run_setup(*args) -> list[dict]:
    out = StringIO()
    call_command("epsilon_setup", *args, stdout=out)
    *lines, schedule_line = out.getvalue().splitlines()
    assert re.fullmatch(
        r"Report schedule (created|already exists): every 60 minutes "
        r"\(run it with `python manage.py qcluster`\)",
        schedule_line,
    )
    parsed = [LINE_RE.match(line) for line in lines]
    assert all(parsed), lines
    return [m.groupdict() for m in parsed]


def stripe_list(resource, **params):
    service = stripe_api.get_client().v1
    for part in resource.split("."):
        service = getattr(service, part)
    return list(service.list(params).auto_paging_iter())


def test_first_run_creates_each_object_and_prints_its_dashboard_url(stripe_emulated):
    lines = run_setup("--demo-customer")

    assert [(line["kind"], line["verb"]) for line in lines] == [
        ("meter", "created"),
        ("product", "created"),
        ("price", "created"),
        ("customer", "created"),
        ("subscription", "created"),
    ]
    prefixes = {"meter": "mtr_", "product": "prod_", "price": "price_", "customer": "cus_", "subscription": "sub_"}
    for line in lines:
        assert line["id"].startswith(prefixes[line["kind"]]), line


def test_rerun_finds_the_same_objects_and_creates_nothing(stripe_emulated):
    first = run_setup("--demo-customer")
    second = run_setup("--demo-customer")

    assert {line["verb"] for line in second} == {"already exists"}
    assert [line["id"] for line in second] == [line["id"] for line in first]
    assert len(stripe_list("billing.meters")) == 1
    assert len(stripe_list("products")) == 1
    assert len(stripe_list("prices")) == 1
    assert len(stripe_list("customers")) == 1
    assert len(stripe_list("subscriptions")) == 1


def test_without_demo_customer_only_the_billing_objects_are_made(stripe_emulated):
    lines = run_setup()
    assert [line["kind"] for line in lines] == ["meter", "product", "price"]
    assert stripe_list("customers") == []
    # Adding the demo customer later reuses the meter, product and price.
    later = run_setup("--demo-customer")
    assert [line["verb"] for line in later] == ["already exists"] * 3 + ["created"] * 2


def test_the_price_is_monthly_metered_at_ten_cents_on_the_meter(stripe_emulated):
    lines = {line["kind"]: line["id"] for line in run_setup()}
    price = stripe_api.get_client().v1.prices.retrieve(lines["price"])

    assert price.currency == "usd"
    assert price.unit_amount_decimal == Decimal("10")  # cents: $0.10 per unit
    assert price.recurring.interval == "month"
    assert price.recurring.usage_type == "metered"
    assert price.recurring.meter == lines["meter"]
    assert price.product == lines["product"]
    assert price.lookup_key == "epsilon_execution_monthly"


def test_the_objects_are_mirrored_into_the_database(stripe_emulated):
    ids = {line["kind"]: line["id"] for line in run_setup("--demo-customer")}

    meter = Meter.objects.get()
    assert (meter.id, meter.event_name, meter.source_meter_slug, meter.window_size) == (
        ids["meter"], "epsilon_execution_duration", "m1", "HOUR",
    )
    assert djstripe_models.Product.objects.get().id == ids["product"]
    price = djstripe_models.Price.objects.get()
    assert price.id == ids["price"] and price.product_id == ids["product"]
    assert price.recurring["meter"] == ids["meter"]
    customer = djstripe_models.Customer.objects.get()
    assert customer.id == ids["customer"] and customer.email == "demo-customer@epsilon.example"
    subscription = djstripe_models.Subscription.objects.get()
    assert subscription.id == ids["subscription"] and subscription.customer_id == ids["customer"]
    item = djstripe_models.SubscriptionItem.objects.get()
    assert item.subscription_id == ids["subscription"] and item.price.id == ids["price"]


def test_a_rerun_keeps_the_operators_meter_configuration(stripe_emulated):
    run_setup()
    Meter.objects.update(source_meter_slug="execution-ms", window_size="DAY")
    run_setup()
    meter = Meter.objects.get()
    assert (meter.source_meter_slug, meter.window_size) == ("execution-ms", "DAY")


def test_a_price_under_the_lookup_key_that_does_not_fit_is_reported_not_reused(stripe_emulated):
    client = stripe_api.get_client()
    lines = {line["kind"]: line["id"] for line in run_setup()}
    # Someone moves the lookup key to a licensed $20 price.
    client.v1.prices.create(
        {
            "product": lines["product"],
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
            "lookup_key": "epsilon_execution_monthly",
            "transfer_lookup_key": True,
        }
    )
    with pytest.raises(CommandError) as raised:
        call_command("epsilon_setup")
    message = str(raised.value)
    assert "does not fit Epsilon" in message
    assert "recurring.usage_type is 'licensed', expected 'metered'" in message
    assert "EPSILON_PRICE_LOOKUP_KEY" in message


def test_live_keys_print_live_dashboard_urls(stripe_emulated, settings):
    live_key = "sk_live_" + "L1veKey0" * 4
    settings.STRIPE_SECRET_KEY = live_key
    settings.STRIPE_LIVE_MODE = True
    out = StringIO()
    call_command("epsilon_setup", stdout=out)
    for line in out.getvalue().splitlines()[:-1]:
        assert "https://dashboard.stripe.com/" in line and "/test/" not in line, line
    assert Meter.objects.get().livemode is True
