"""Responses carry every key of Stripe's own example objects (fixtures3.json)."""

import pytest

from stripe_emulator import fixtures


def keys(obj):
    return set(obj.keys())


@pytest.mark.parametrize("name", sorted(fixtures.DEFAULTS))
def test_defaults_cover_the_example_keys(name):
    assert keys(fixtures.template(name)) == keys(fixtures.shape(name))


def test_api_responses_have_stripe_keys(client, http, meter, customer, stripe_emulator):
    prod = client.v1.products.create({"name": "p"})
    price = client.v1.prices.create({"currency": "usd", "product": prod.id,
                                     "unit_amount_decimal": "0.1",
                                     "recurring": {"interval": "month", "usage_type": "metered",
                                                   "meter": meter.id}})
    sub = http.post("/v1/subscriptions", data={"customer": customer.id,
                                               "items[0][price]": price.id}).json()
    ev = http.post("/v1/billing/meter_events", data={
        "event_name": "execution_seconds", "payload[stripe_customer_id]": customer.id,
        "payload[value]": "1"}).json()
    now = stripe_emulator.now() // 60 * 60
    summary = http.get(f"/v1/billing/meters/{meter.id}/event_summaries", params={
        "customer": customer.id, "start_time": now - 3600, "end_time": now}).json()["data"][0]
    item = sub["items"]["data"][0]
    checks = {
        "product": http.get(f"/v1/products/{prod.id}").json(),
        "price": http.get(f"/v1/prices/{price.id}").json(),
        "customer": http.get(f"/v1/customers/{customer.id}").json(),
        "subscription": sub,
        "subscription_item": item,
        "plan": item["plan"],
        "billing.meter": http.get(f"/v1/billing/meters/{meter.id}").json(),
        "billing.meter_event": ev,
        "billing.meter_event_summary": summary,
        "account": http.get("/v1/account").json(),
    }
    for name, obj in checks.items():
        expected = keys(fixtures.shape(name))
        if name == "subscription_item":
            expected -= {"quantity"}  # metered items carry no quantity on Stripe
        assert keys(obj) == expected, name
    assert keys(sub["items"]) == keys(fixtures.shape("subscription")["items"])
