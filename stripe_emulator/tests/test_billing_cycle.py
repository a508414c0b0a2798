"""The billing cycle: periods roll over once, with a draft invoice whose metered
quantity is the meter's sum over the closed period, finalized after the grace hour."""

from decimal import Decimal

import pytest

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
END = ts(2026, 2, 10, 12)      # the first period's end
NEXT_END = ts(2026, 3, 10, 12)
HOUR = 3600


@pytest.fixture
def clock(client):
    return client.v1.test_helpers.test_clocks.create({"frozen_time": T0})


@pytest.fixture
def sub(client, clock, metered_price):
    customer = client.v1.customers.create({"test_clock": clock.id, "name": "Ada"})
    return client.v1.subscriptions.create({"customer": customer.id,
                                           "items": [{"price": metered_price.id}]})


def usage(client, sub, value, timestamp, identifier=None):
    params = {"event_name": "execution_seconds", "timestamp": timestamp,
              "payload": {"stripe_customer_id": sub.customer, "value": str(value)}}
    if identifier:
        params["identifier"] = identifier
    client.v1.billing.meter_events.create(params)


def of_type(stripe_emulator, type):
    return [e for e in stripe_emulator.events() if e["type"] == type]


def test_rollover_happens_once_however_time_moves(client, clock, sub, stripe_emulator):
    item_id = sub["items"].data[0].id
    for target in (END - 1, END, END + 60, END + HOUR + 1, NEXT_END - 1):
        stripe_emulator.advance_test_clock(clock.id, target)
        # Reads in between (each settles the customer) must not roll again.
        got = client.v1.subscriptions.retrieve(sub.id)
        client.v1.invoices.list({"customer": sub.customer})
        client.v1.subscription_items.retrieve(item_id)
        expected = (T0, END) if target < END else (END, NEXT_END)
        item = got["items"].data[0]
        assert (item.current_period_start, item.current_period_end) == expected
    assert len(of_type(stripe_emulator, "customer.subscription.updated")) == 1
    assert len(of_type(stripe_emulator, "invoice.created")) == 1
    assert len(of_type(stripe_emulator, "invoice.finalized")) == 1
    assert len(stripe_emulator.invoices(customer=sub.customer)) == 1
    stripe_emulator.advance_test_clock(clock.id, NEXT_END)
    assert len(stripe_emulator.invoices(customer=sub.customer)) == 2


def test_a_long_jump_closes_each_period_in_order(client, clock, sub, stripe_emulator):
    stripe_emulator.advance_test_clock(clock.id, NEXT_END)  # at most two intervals at once
    stripe_emulator.advance_test_clock(clock.id, NEXT_END + 2 * HOUR)
    invoices = stripe_emulator.invoices(customer=sub.customer)
    assert [(i["period_start"], i["period_end"], i["status"]) for i in invoices] == [
        (T0, END, "paid"), (END, NEXT_END, "paid")]  # no usage: $0, paid on finalization
    types = [e["type"] for e in stripe_emulator.events()
             if e["type"].startswith(("invoice.", "customer.subscription.updated"))]
    assert types == ["customer.subscription.updated", "invoice.created", "invoice.finalized",
                     "invoice.paid"] * 2
    created = [e["created"] for e in stripe_emulator.events()
               if e["type"] in ("invoice.created", "invoice.finalized")]
    assert created == [END, END + HOUR, NEXT_END, NEXT_END + HOUR]


def test_previous_attributes_carry_the_old_item_periods_and_latest_invoice(
        client, clock, sub, stripe_emulator):
    stripe_emulator.advance_test_clock(clock.id, END + 60)
    event = client.v1.events.list({"type": "customer.subscription.updated"}).data[0]
    previous = event.data.previous_attributes.to_dict()
    assert set(previous) == {"items", "latest_invoice"}
    assert previous["latest_invoice"] is None
    old_items = previous["items"]
    assert (old_items["object"], old_items["url"]) == (
        "list", f"/v1/subscription_items?subscription={sub.id}")
    [old] = old_items["data"]
    assert (old["id"], old["current_period_start"], old["current_period_end"]) == (
        sub["items"].data[0].id, T0, END)
    [new] = event.data.object["items"].data
    assert (new.current_period_start, new.current_period_end) == (END, NEXT_END)
    invoice_id = event.data.object.latest_invoice
    assert invoice_id.startswith("in_")
    assert client.v1.subscriptions.retrieve(sub.id).latest_invoice == invoice_id
    assert (event["request"]["id"], event.api_version, event.created) == (
        None, "2026-08-26.dahlia", END)


def test_invoice_quantity_is_the_usage_of_the_closed_period(client, clock, sub,
                                                            stripe_emulator):
    usage(client, sub, 3, T0 - 1)          # before the period: not billed
    usage(client, sub, 10, T0)             # at start: billed
    stripe_emulator.advance_test_clock(clock.id, END - 120)
    usage(client, sub, "2.5", T0 + 86400)
    usage(client, sub, 7, END - 1)         # just before end: billed
    stripe_emulator.advance_test_clock(clock.id, END + 60)
    usage(client, sub, 100, END)           # at end: the next period
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert (invoice.status, invoice.billing_reason, invoice.auto_advance) == (
        "draft", "subscription_cycle", True)
    assert (invoice.created, invoice.automatically_finalizes_at) == (END, END + HOUR)
    assert (invoice.period_start, invoice.period_end) == (T0, END)
    [line] = invoice.lines.data
    assert (line.quantity_decimal, line.quantity) == (Decimal("19.5"), 19)
    assert (line.period.start, line.period.end) == (T0, END)
    totals = stripe_emulator.meter_event_totals(customer=sub.customer, start=T0, end=END)
    assert Decimal(totals["total"]) == Decimal("19.5")

    # Late usage for the closed period counts while the invoice is a draft ...
    usage(client, sub, "0.5", END - 30, identifier="late-1")
    assert client.v1.invoices.retrieve(invoice.id).lines.data[0].quantity_decimal == 20
    stripe_emulator.advance_test_clock(clock.id, END + HOUR - 1)
    usage(client, sub, 20, END - 20, identifier="late-2")
    # ... and no longer once it is finalized.
    stripe_emulator.advance_test_clock(clock.id, END + HOUR)
    usage(client, sub, 1000, END - 10, identifier="too-late")
    final = client.v1.invoices.retrieve(invoice.id)
    assert final.status == "open"
    assert final.status_transitions.finalized_at == END + HOUR
    assert final.lines.data[0].quantity_decimal == 40
    assert final.amount_due == 2  # 40 x 0.05 cents
    finalized = of_type(stripe_emulator, "invoice.finalized")[0]["data"]["object"]
    assert finalized["lines"]["data"][0]["quantity_decimal"] == "40"
    created = of_type(stripe_emulator, "invoice.created")[0]["data"]["object"]
    assert created["lines"]["data"][0]["quantity_decimal"] == "19.5"


@pytest.mark.parametrize("total, amount", [
    ("30", 2),       # Stripe's example: 0.05 x 30 = 1.5 -> 2 cents
    ("10", 1),       # 0.5 rounds half up, not to even
    ("29", 1),       # 1.45 -> 1
    ("50", 3),       # 2.5 -> 3 (half-even would give 2)
    ("0.000001", 0),
])
def test_amounts_round_each_line_half_up_to_the_minor_unit(client, clock, sub,
                                                           stripe_emulator, total, amount):
    usage(client, sub, total, T0 + 60)
    stripe_emulator.advance_test_clock(clock.id, END + HOUR)
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    [line] = invoice.lines.data
    assert (line.amount, line.subtotal) == (amount, amount)
    assert (invoice.subtotal, invoice.total, invoice.amount_due) == (amount, amount, amount)
    assert line.pricing.unit_amount_decimal == Decimal("0.05")


def test_licensed_items_bill_the_new_period_in_advance(client, clock, metered_price,
                                                       stripe_emulator):
    seats = client.v1.prices.create({"currency": "usd", "product": metered_price.product,
                                     "unit_amount": 1000, "recurring": {"interval": "month"}})
    customer = client.v1.customers.create({"test_clock": clock.id})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [
        {"price": seats.id, "quantity": 3}, {"price": metered_price.id}]})
    usage(client, sub, 40, T0 + 60)
    stripe_emulator.advance_test_clock(clock.id, END)
    invoice = stripe_emulator.invoices(customer=customer.id)[0]
    licensed, metered = invoice["lines"]["data"]
    assert (licensed["quantity"], licensed["amount"], licensed["period"]) == (
        3, 3000, {"start": END, "end": NEXT_END})
    assert (metered["quantity"], metered["amount"], metered["period"]) == (
        40, 2, {"start": T0, "end": END})
    assert invoice["total"] == 3002


def test_emulator_clock_customers_roll_once_whichever_way_time_moves(
        client, metered_price, stripe_emulator):
    stripe_emulator.freeze_time(T0)
    customer = client.v1.customers.create({"name": "no test clock"})
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": metered_price.id}]})
    usage(client, sub, 30, T0 + 60)
    for t in (END - 1, END + 5, END + 10, END + HOUR + 1):
        stripe_emulator.set_time(t)
        client.v1.subscriptions.retrieve(sub.id)
        client.v1.invoices.list()
    stripe_emulator.server.app.scheduler.submit(lambda: None)  # let a tick run too
    stripe_emulator.wait_idle()
    [invoice] = stripe_emulator.invoices(customer=customer.id)
    assert (invoice["status"], invoice["amount_due"], invoice["created"]) == ("open", 2, END)
    assert len(of_type(stripe_emulator, "customer.subscription.updated")) == 1
    assert len(of_type(stripe_emulator, "invoice.finalized")) == 1


def test_cancel_at_period_end_cancels_with_a_final_invoice(client, clock, sub, stripe_emulator):
    # Stripe: "Any metered usage is charged for in a final invoice when the
    # subscription cancels at the end of the billing period."
    usage(client, sub, 30, T0 + 60)
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    stripe_emulator.advance_test_clock(clock.id, END + 60)
    got = client.v1.subscriptions.retrieve(sub.id)
    assert (got.status, got.canceled_at) == ("canceled", END)
    [invoice] = stripe_emulator.invoices(customer=sub.customer)
    assert (invoice["billing_reason"], invoice["period_start"], invoice["period_end"]) == (
        "subscription_cycle", T0, END)
    assert invoice["lines"]["data"][0]["quantity"] == 30
    assert got.latest_invoice == invoice["id"]
    assert [e["created"] for e in of_type(stripe_emulator, "customer.subscription.deleted")] == [
        END]
    assert of_type(stripe_emulator, "customer.subscription.updated")[-1]["created"] < END
