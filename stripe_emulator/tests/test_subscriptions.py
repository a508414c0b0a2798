"""Subscriptions: create, item periods (dahlia: on items), lists, cancel, expansion."""

import pytest
import stripe

from .conftest import ts


@pytest.fixture
def prices(client, meter):
    prod = client.v1.products.create({"name": "Epsilon"})
    licensed = client.v1.prices.create({"currency": "usd", "product": prod.id,
                                        "unit_amount": 1000, "recurring": {"interval": "month"}})
    metered = client.v1.prices.create({"currency": "usd", "product": prod.id,
                                       "unit_amount_decimal": "0.1",
                                       "recurring": {"interval": "month",
                                                     "usage_type": "metered",
                                                     "meter": meter.id}})
    return licensed, metered


def test_create_subscription_with_licensed_and_metered_items(client, customer, prices,
                                                             stripe_emulator):
    licensed, metered = prices
    stripe_emulator.freeze_time(ts(2026, 3, 10, 15, 30))
    sub = client.v1.subscriptions.create({
        "customer": customer.id, "metadata": {"tenant": "t1"},
        "items": [{"price": licensed.id, "quantity": 3}, {"price": metered.id}]})
    assert sub.id.startswith("sub_") and len(sub.id) == len("sub_") + 24
    assert (sub.status, sub.customer, sub.currency) == ("active", customer.id, "usd")
    assert sub.start_date == sub.created == sub.billing_cycle_anchor == ts(2026, 3, 10, 15, 30)
    assert sub.latest_invoice is None
    assert "current_period_start" not in sub  # dahlia: periods live on items
    assert sub["items"].object == "list"
    assert sub["items"].url == f"/v1/subscription_items?subscription={sub.id}"
    first, second = sub["items"].data
    assert first.id.startswith("si_") and first.subscription == sub.id
    assert (first.price.id, first.quantity, first.plan.amount) == (licensed.id, 3, 1000)
    assert second.price.recurring.meter == prices[1].recurring.meter
    assert "quantity" not in second  # metered items have no quantity
    for item in (first, second):
        assert item.current_period_start == ts(2026, 3, 10, 15, 30)
        assert item.current_period_end == ts(2026, 4, 10, 15, 30)


@pytest.mark.parametrize("start, end", [
    (ts(2026, 1, 31, 9), ts(2026, 2, 28, 9)),
    (ts(2028, 1, 31, 9), ts(2028, 2, 29, 9)),   # leap year
    (ts(2026, 3, 31, 0), ts(2026, 4, 30, 0)),
    (ts(2026, 12, 15, 0), ts(2027, 1, 15, 0)),
])
def test_monthly_periods_clamp_to_month_end(client, customer, prices, stripe_emulator,
                                            start, end):
    stripe_emulator.freeze_time(start)
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[0].id}]})
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (start, end)


def test_periods_roll_forward_from_the_anchor(client, customer, prices, stripe_emulator):
    stripe_emulator.freeze_time(ts(2026, 1, 31, 9))
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[1].id}]})
    stripe_emulator.set_time(ts(2026, 3, 1, 0))
    item = client.v1.subscriptions.retrieve(sub.id)["items"].data[0]
    # Counted from the Jan 31 anchor, not chained from Feb 28.
    assert (item.current_period_start, item.current_period_end) == (
        ts(2026, 2, 28, 9), ts(2026, 3, 31, 9))
    listed = client.v1.subscription_items.list({"subscription": sub.id}).data[0]
    assert listed.current_period_end == ts(2026, 3, 31, 9)


def test_billing_cycle_anchor(client, customer, prices, stripe_emulator):
    stripe_emulator.freeze_time(ts(2026, 5, 20, 12))
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[0].id}],
                                          "billing_cycle_anchor": ts(2026, 6, 1)})
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (
        ts(2026, 5, 20, 12), ts(2026, 6, 1))
    stripe_emulator.set_time(ts(2026, 6, 15))
    item = client.v1.subscription_items.retrieve(item.id)
    assert (item.current_period_start, item.current_period_end) == (ts(2026, 6, 1), ts(2026, 7, 1))
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.create({"customer": customer.id,
                                        "items": [{"price": prices[0].id}],
                                        "billing_cycle_anchor": ts(2026, 1, 1)})
    assert exc.value.param == "billing_cycle_anchor"


@pytest.mark.parametrize("items, param, fragment", [
    ([{"price": "METERED", "quantity": 2}], "items[0][quantity]", "usage_type is `metered`"),
    ([{"price": "price_nope"}], "items[0][price]", "No such price"),
    ([{"price": "LICENSED"}, {"price": "LICENSED"}], "items[1][price]", "same price"),
    ([{"price": "ONE_TIME"}], "items[0][price]", "type=recurring"),
    ([], "items", "Missing required param: items."),
])
def test_subscription_validation(client, customer, prices, items, param, fragment):
    licensed, metered = prices
    one_time = client.v1.prices.create({"currency": "usd", "product": licensed.product,
                                        "unit_amount": 5})
    names = {"METERED": metered.id, "LICENSED": licensed.id, "ONE_TIME": one_time.id}
    items = [{**i, "price": names.get(i["price"], i["price"])} for i in items]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.create({"customer": customer.id, "items": items})
    assert exc.value.param == param
    assert fragment in exc.value.user_message


def test_subscription_needs_a_live_customer(client, prices):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.create({"customer": "cus_nope",
                                        "items": [{"price": prices[0].id}]})
    assert exc.value.param == "customer" and exc.value.code == "resource_missing"


def test_list_filters_and_cancel(client, prices):
    a = client.v1.customers.create({"name": "a"})
    b = client.v1.customers.create({"name": "b"})
    s1 = client.v1.subscriptions.create({"customer": a.id, "items": [{"price": prices[0].id}]})
    s2 = client.v1.subscriptions.create({"customer": b.id, "items": [{"price": prices[1].id}]})
    canceled = client.v1.subscriptions.cancel(s1.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at == canceled.ended_at is not None
    assert canceled.cancellation_details.reason == "cancellation_requested"
    ids = lambda res: [s.id for s in res.data]  # noqa: E731
    assert ids(client.v1.subscriptions.list()) == [s2.id]  # default hides canceled
    assert ids(client.v1.subscriptions.list({"status": "all"})) == [s2.id, s1.id]
    assert ids(client.v1.subscriptions.list({"status": "canceled"})) == [s1.id]
    assert ids(client.v1.subscriptions.list({"customer": b.id})) == [s2.id]
    assert ids(client.v1.subscriptions.list({"price": prices[1].id})) == [s2.id]
    assert ids(client.v1.subscriptions.list({"customer": a.id, "status": "all"})) == [s1.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(s1.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(s1.id, {"description": "nope"})
    assert "canceled subscription can only update" in exc.value.user_message
    upd = client.v1.subscriptions.update(s1.id, {"metadata": {"k": "v"}})
    assert upd.metadata.to_dict() == {"k": "v"}


def test_update_metadata_and_cancel_at_period_end(client, customer, prices, stripe_emulator):
    stripe_emulator.freeze_time(ts(2026, 4, 1))
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[0].id}],
                                          "metadata": {"a": "1"}})
    sub = client.v1.subscriptions.update(sub.id, {"metadata": {"b": "2"},
                                                  "cancel_at_period_end": True})
    assert sub.metadata.to_dict() == {"a": "1", "b": "2"}
    assert (sub.cancel_at_period_end, sub.cancel_at, sub.status) == (True, ts(2026, 5, 1),
                                                                     "active")
    stripe_emulator.set_time(ts(2026, 5, 1) + 1)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert (sub.status, sub.canceled_at, sub.ended_at) == ("canceled", ts(2026, 5, 1),
                                                           ts(2026, 5, 1))


def test_subscription_items_endpoints(client, http, customer, prices):
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[0].id},
                                                    {"price": prices[1].id}]})
    items = client.v1.subscription_items.list({"subscription": sub.id})
    assert [i.price.id for i in items.data] == [prices[1].id, prices[0].id]
    one = client.v1.subscription_items.retrieve(items.data[0].id)
    assert one.subscription == sub.id and one.plan.id == prices[1].id
    r = http.get("/v1/subscription_items")
    assert r.status_code == 400 and r.json()["error"]["param"] == "subscription"


def test_expansions_on_subscriptions(client, http, customer, prices):
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": prices[0].id}],
                                          "expand": ["customer"]})
    assert sub.customer.email == "ada@example.com"
    got = client.v1.subscriptions.retrieve(
        sub.id, {"expand": ["items.data.price.product", "latest_invoice"]})
    assert got["items"].data[0].price.product.name == "Epsilon"
    assert got.latest_invoice is None
    listed = client.v1.subscriptions.list({"expand": ["data.customer", "data.latest_invoice"]})
    assert listed.data[0].customer.id == customer.id
    # Stripe's limit is four levels, `data` included (its docs' example of the deepest
    # allowed expansion is data.payment_intent.customer.default_source).
    r = http.get("/v1/subscriptions", params={"expand[]": "data.items.data.price.product"})
    assert r.status_code == 400 and "more than 4 levels" in r.json()["error"]["message"]
    r = http.get(f"/v1/subscriptions/{sub.id}", params={"expand[]": "items.data.nope"})
    assert r.status_code == 400
