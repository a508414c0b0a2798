"""The invoice preview (`POST /v1/invoices/create_preview`): the draft the billing
cycle will make at the current period's end, metered quantities being the meter's
usage so far, on the customer's (test clock's) time; stored nowhere; Stripe's
`invoice_upcoming_none` when nothing will be invoiced."""

from decimal import Decimal

import pytest
import stripe

from stripe_emulator import fixtures

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
END = ts(2026, 2, 10, 12)
NEXT_END = ts(2026, 3, 10, 12)


@pytest.fixture
def price(client, meter):
    """Epsilon's price: $0.10 per unit (unit_amount 10 cents), monthly, metered."""
    prod = client.v1.products.create({"name": "Epsilon"})
    return client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 10,
                                    "recurring": {"interval": "month", "usage_type": "metered",
                                                  "meter": meter.id}})


@pytest.fixture
def clock(client):
    return client.v1.test_helpers.test_clocks.create({"frozen_time": T0})


def subscribe(client, price, clock=None):
    params = {"email": "ada@example.com", "name": "Ada"}
    if clock is not None:
        params["test_clock"] = clock.id
    customer = client.v1.customers.create(params)
    return client.v1.subscriptions.create({"customer": customer.id,
                                           "items": [{"price": price.id}]})


def usage(client, sub, value, timestamp):
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "timestamp": timestamp,
        "payload": {"stripe_customer_id": sub.customer, "value": str(value)}})


def preview(client, sub):
    return client.v1.invoices.create_preview(params={"customer": sub.customer,
                                                     "subscription": sub.id})


def test_preview_bills_the_usage_reported_so_far_at_the_price(client, price, stripe_emulator):
    now = stripe_emulator.freeze_time(T0)
    sub = subscribe(client, price)
    usage(client, sub, 386, now + 60)
    usage(client, sub, 3, now + 120)
    stripe_emulator.set_time(now + 3600, freeze=True)

    upcoming = preview(client, sub)

    assert set(upcoming.to_dict()) == set(fixtures.shape("invoice"))
    assert upcoming.id.startswith("upcoming_in_")
    assert (upcoming.status, upcoming.billing_reason, upcoming.customer) == (
        "draft", "subscription_cycle", sub.customer)
    assert (upcoming.period_start, upcoming.period_end, upcoming.created) == (T0, END, END)
    [line] = upcoming.lines.data
    assert set(line.to_dict()) == set(fixtures.shape("line_item"))
    assert line.id.startswith("il_tmp_")
    assert (line.quantity, line.quantity_decimal) == (389, Decimal(389))
    assert (line.amount, line.subtotal) == (3890, 3890)  # 389 x $0.10
    assert line.pricing.price_details.price == price.id
    assert line.pricing.unit_amount_decimal == Decimal(10)
    assert (line.period.start, line.period.end) == (T0, END)
    assert line.parent.subscription_item_details.subscription_item == sub["items"].data[0].id
    assert (upcoming.subtotal, upcoming.total, upcoming.amount_due) == (3890, 3890, 3890)
    assert (upcoming.total_excluding_tax, upcoming.total_taxes, line.taxes) == (3890, [], [])
    # A preview is not an invoice: nothing listed, nothing sent.
    assert client.v1.invoices.list({"customer": sub.customer}).data == []
    assert stripe_emulator.events("invoice.created") == []

    usage(client, sub, 11, now + 1800)  # more usage: the next preview counts it
    assert preview(client, sub).lines.data[0].quantity == 400


def test_preview_equals_the_invoice_the_cycle_drafts(client, price, clock, stripe_emulator):
    sub = subscribe(client, price, clock)
    usage(client, sub, 1234, T0 + 60)
    upcoming = preview(client, sub)
    stripe_emulator.advance_test_clock(clock.id, END + 60)
    drafted = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert drafted.id != upcoming.id and not drafted.id.startswith("upcoming_")
    for field in ("period_start", "period_end", "created", "subtotal", "total", "amount_due",
                  "billing_reason", "total_taxes"):
        assert upcoming[field] == drafted[field], field
    assert [(l.quantity, l.amount, l.period.start, l.period.end) for l in upcoming.lines.data] == [
        (l.quantity, l.amount, l.period.start, l.period.end) for l in drafted.lines.data] == [
        (1234, 12340, T0, END)]


def test_preview_follows_the_test_clock(client, price, clock, stripe_emulator):
    sub = subscribe(client, price, clock)
    usage(client, sub, 100, T0 + 60)
    stripe_emulator.advance_test_clock(clock.id, END + 600)  # into the second period
    usage(client, sub, 7, END + 300)
    usage(client, sub, 5, END + 400)

    upcoming = preview(client, sub)

    assert (upcoming.period_start, upcoming.period_end, upcoming.created) == (
        END, NEXT_END, NEXT_END)
    assert upcoming.test_clock == clock.id
    [line] = upcoming.lines.data
    assert (line.quantity, line.amount, line.period.start, line.period.end) == (
        12, 120, END, NEXT_END)
    assert upcoming.total == 120


def test_unit_amount_decimal_rounds_per_line(client, metered_price, clock):
    sub = subscribe(client, metered_price, clock)  # 0.05 cents per unit
    usage(client, sub, 30, T0 + 60)
    upcoming = preview(client, sub)
    assert (upcoming.lines.data[0].amount, upcoming.total) == (2, 2)  # 1.5 -> 2, as Stripe


def test_no_upcoming_invoice(client, price, clock, http):
    customer = client.v1.customers.create({"name": "Nobody"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.create_preview(params={"customer": customer.id})
    assert (exc.value.http_status, exc.value.code) == (404, "invoice_upcoming_none")
    assert customer.id in exc.value.user_message

    sub = subscribe(client, price, clock)
    client.v1.subscriptions.cancel(sub.id)
    r = http.post("/v1/invoices/create_preview", data={"subscription": sub.id})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "invoice_upcoming_none"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_missing_or_unknown_customer(client, http):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.create_preview(params={"customer": "cus_nope"})
    assert (exc.value.http_status, exc.value.code, exc.value.param) == (
        404, "resource_missing", "customer")
    r = http.post("/v1/invoices/create_preview")
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (
        "parameter_missing", "customer")
    r = http.post("/v1/invoices/create_preview",
                  data={"customer": "cus_nope", "subscription_details[items][0][price]": "x"})
    assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]


def test_subscription_of_another_customer(client, price, clock):
    sub = subscribe(client, price, clock)
    other = client.v1.customers.create({"name": "Other"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.create_preview(params={"customer": other.id, "subscription": sub.id})
    assert (exc.value.http_status, exc.value.param) == (400, "subscription")
    # The subscription alone names its customer.
    assert client.v1.invoices.create_preview(
        params={"subscription": sub.id}).customer == sub.customer
