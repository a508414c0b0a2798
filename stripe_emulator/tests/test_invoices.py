"""Invoice endpoints: retrieve/list/lines, finalize, pay out of band, the expansions
dj-stripe sends (dj-stripe syncing an invoice is tested in the project's
tests/test_emulator_djstripe.py)."""

import pytest
import stripe

from stripe_emulator import fixtures

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
END = ts(2026, 2, 10, 12)


@pytest.fixture
def draft(client, metered_price, stripe_emulator):
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = client.v1.customers.create({"test_clock": clock.id, "email": "a@example.com"})
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": metered_price.id}]})
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "timestamp": T0 + 60,
        "payload": {"stripe_customer_id": customer.id, "value": "2000"}})
    stripe_emulator.advance_test_clock(clock.id, END + 60)
    return client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)


def test_invoice_shape(draft, metered_price):
    assert set(draft.to_dict()) == set(fixtures.shape("invoice"))
    [line] = draft.lines.data
    assert set(line.to_dict()) == set(fixtures.shape("line_item"))
    assert draft.lines.url == f"/v1/invoices/{draft.id}/lines"
    details = line.parent.subscription_item_details
    assert (line.parent.type, details.proration, details.subscription) == (
        "subscription_item_details", False, draft.parent.subscription_details.subscription)
    assert line.pricing.price_details.price == metered_price.id
    assert (line.amount, draft.amount_due, draft.customer_email, draft.number) == (
        100, 100, "a@example.com", None)


def test_list_filters_and_lines(client, draft):
    sub_id = draft.parent.subscription_details.subscription
    assert [i.id for i in client.v1.invoices.list({"customer": draft.customer}).data] == [
        draft.id]
    assert [i.id for i in client.v1.invoices.list({"subscription": sub_id}).data] == [draft.id]
    assert client.v1.invoices.list({"status": "open"}).data == []
    assert client.v1.invoices.list({"subscription": "sub_other"}).data == []
    lines = client.v1.invoices.line_items.list(draft.id)
    assert [li.id for li in lines.data] == [draft.lines.data[0].id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.retrieve("in_nope")
    assert exc.value.code == "resource_missing"


def test_finalize_then_pay_out_of_band(client, draft, stripe_emulator):
    final = client.v1.invoices.finalize_invoice(draft.id)
    assert (final.status, final.amount_due, final.amount_remaining) == ("open", 100, 100)
    assert final.number and final.number.endswith("-0001")
    assert final.status_transitions.finalized_at == END + 60  # the customer's (clock) time
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.finalize_invoice(draft.id)
    assert "already finalized" in exc.value.user_message
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(draft.id)  # no payment methods in the emulator
    paid = client.v1.invoices.pay(draft.id, {"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 100, 0)
    assert paid.status_transitions.paid_at == END + 60
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(draft.id, {"paid_out_of_band": True})
    types = [e["type"] for e in stripe_emulator.events() if e["type"].startswith("invoice.")]
    assert types == ["invoice.created", "invoice.finalized", "invoice.paid"]
    finalized = stripe_emulator.events("invoice.finalized")[0]
    assert finalized["request"]["id"].startswith("req_")  # made by that API request
    # Finalized quantities stay put, even for late usage.
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "timestamp": END - 1,
        "payload": {"stripe_customer_id": draft.customer, "value": "2000"}})
    assert client.v1.invoices.retrieve(draft.id).amount_due == 100


def test_dj_stripe_expansions(http, draft):
    r = http.get(f"/v1/invoices/{draft.id}",
                 params={"expand[]": ["discounts", "lines.data.discounts"]})
    assert r.status_code == 200, r.text
    r = http.get(f"/v1/invoices/{draft.id}", params={"expand[]": ["customer", "test_clock"]})
    body = r.json()
    assert (body["customer"]["object"], body["test_clock"]["object"]) == (
        "customer", "test_helpers.test_clock")
    r = http.get("/v1/subscriptions", params={"expand[]": "data.latest_invoice"})
    assert r.json()["data"][0]["latest_invoice"]["id"] == draft.id
