"""POST /_emulator/bulk_subscriptions: N customers each subscribed to a price, made by the
API's own handlers (the same objects, events and webhooks as the API calls), many per
transaction."""

import httpx
import pytest

from .conftest import ts

T0 = ts(2026, 1, 10, 12)


def bulk(stripe_emulator, **params):
    return httpx.post(f"{stripe_emulator.url}/_emulator/bulk_subscriptions", data=params, timeout=60)


@pytest.fixture
def price(client, metered_price, stripe_emulator):
    stripe_emulator.set_time(T0, freeze=True)
    return metered_price


def test_makes_numbered_customers_each_subscribed_to_the_price(client, stripe_emulator, price):
    answer = bulk(stripe_emulator, count=5, price=price.id, email_prefix="bench", start=10, batch=2,
                  metadata_n="true")
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["count"] == 5 and len(made["customers"]) == len(made["subscriptions"]) == 5
    customers = {c.id: c for c in client.v1.customers.list({"limit": 100}).data}
    assert [(customers[c].email, customers[c].metadata.to_dict()) for c in made["customers"]] == [
        (f"bench{n}@example.com", {"n": str(n)}) for n in range(10, 15)
    ]
    subscriptions = {s.id: s for s in client.v1.subscriptions.list({"limit": 100}).data}
    assert [(subscriptions[s].customer, [i.price.id for i in subscriptions[s]["items"].data])
            for s in made["subscriptions"]] == [(c, [price.id]) for c in made["customers"]]
    assert not stripe_emulator.requests(method="POST", path_prefix="/v1/customers")  # nothing logged


def comparable(obj: dict) -> dict:
    """An object without what differs between two made alike: ids and numbers drawn at random."""
    drop = {"id", "customer", "subscription", "email", "invoice_prefix", "url"}
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def test_the_objects_and_events_are_the_apis(client, stripe_emulator, price, receiver):
    client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
    by_api = client.v1.customers.create({"email": "api@example.com"})
    api_sub = client.v1.subscriptions.create({"customer": by_api.id, "items": [{"price": price.id}]})
    made = bulk(stripe_emulator, count=1, price=price.id).json()
    by_bulk = client.v1.customers.retrieve(made["customers"][0])
    bulk_sub = client.v1.subscriptions.retrieve(made["subscriptions"][0])
    assert comparable(by_bulk.to_dict()) == comparable(client.v1.customers.retrieve(by_api.id).to_dict())
    assert comparable(bulk_sub.to_dict()) == comparable(client.v1.subscriptions.retrieve(api_sub.id).to_dict())
    assert stripe_emulator.flush_webhooks(10)
    delivered = [(e["type"], e["data"]["object"]["id"]) for e in receiver.events()]
    assert delivered == [
        ("customer.created", by_api.id), ("customer.subscription.created", api_sub.id),
        ("customer.created", by_bulk.id), ("customer.subscription.created", bulk_sub.id),
    ]
    events = {e["data"]["object"]["id"]: e for e in stripe_emulator.events()}
    assert comparable(events[bulk_sub.id]["data"]) == comparable(events[api_sub.id]["data"])
    assert events[bulk_sub.id]["request"]["id"].startswith("req_")


def test_ids_false_answers_counts_only(stripe_emulator, price):
    made = bulk(stripe_emulator, count=3, price=price.id, ids="false").json()
    assert made["count"] == 3 and "customers" not in made and "subscriptions" not in made
    assert len(stripe_emulator.store.all("subscription")) == 3


def test_the_apis_refusal_stops_and_rolls_back_the_batch(client, stripe_emulator, price):
    client.v1.prices.update(price.id, {"active": False})
    answer = bulk(stripe_emulator, count=3, price=price.id)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "The price specified is inactive. This field only accepts active prices."
    assert answer.json()["made"]["count"] == 0
    assert stripe_emulator.store.all("customer") == []  # the failing pair's batch is rolled back


def test_bad_params(stripe_emulator, price):
    assert bulk(stripe_emulator, count=3).status_code == 400
    assert bulk(stripe_emulator, count=0, price=price.id).status_code == 400
    assert bulk(stripe_emulator, count=3, price="price_nope").status_code == 404
