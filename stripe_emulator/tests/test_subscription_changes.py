"""Subscription changes: items (remove, replace a price, add) under both billing
modes and each proration_behavior, billing_cycle_anchor=now, trials, cancellation
with and without invoice_now, and the test-only status control. Each test checks
which metered quantities each invoice bills for meter events with given
timestamps, on a test clock."""

from decimal import Decimal

import httpx
import pytest
import stripe

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
MID = ts(2026, 1, 25, 12)       # a change in the middle of the first period
END = ts(2026, 2, 10, 12)       # the first period's natural end
NEXT_END = ts(2026, 3, 10, 12)
HOUR = 3600
DAY = 86400


@pytest.fixture
def clock(client):
    return client.v1.test_helpers.test_clocks.create({"frozen_time": T0})


@pytest.fixture
def cust(client, clock):
    return client.v1.customers.create({"test_clock": clock.id, "name": "Ada"})


@pytest.fixture
def price_b(client, metered_price, meter):
    """A second metered price on the same meter: 0.1 cents per unit."""
    return client.v1.prices.create({"currency": "usd", "product": metered_price.product,
                                    "unit_amount_decimal": "0.1",
                                    "recurring": {"interval": "month", "usage_type": "metered",
                                                  "meter": meter.id}})


@pytest.fixture
def other_meter_price(client, metered_price):
    meter = client.v1.billing.meters.create({"display_name": "Storage", "event_name": "storage",
                                             "default_aggregation": {"formula": "sum"}})
    return client.v1.prices.create({"currency": "usd", "product": metered_price.product,
                                    "unit_amount_decimal": "1",
                                    "recurring": {"interval": "month", "usage_type": "metered",
                                                  "meter": meter.id}})


def subscribe(client, cust, *prices, mode=None, **extra):
    params = {"customer": cust.id, "items": [{"price": p.id} for p in prices], **extra}
    if mode:
        params["billing_mode"] = {"type": mode}
    return client.v1.subscriptions.create(params)


@pytest.fixture
def usage(client, cust, clock, stripe_emulator):
    """Send a meter event stamped `timestamp`, first moving the test clock there if
    it is ahead (Stripe takes events at most 5 minutes in the future)."""
    def send(value, timestamp, event_name="execution_seconds"):
        frozen = client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time
        if timestamp > frozen:
            stripe_emulator.advance_test_clock(clock.id, timestamp)
        client.v1.billing.meter_events.create({
            "event_name": event_name, "timestamp": timestamp,
            "payload": {"stripe_customer_id": cust.id, "value": str(value)}})
    return send


def of_type(stripe_emulator, type):
    return [e for e in stripe_emulator.events() if e["type"] == type]


def lines(invoice):
    """(subscription item, price, start, end, quantity, amount, proration) per line."""
    out = []
    for line in invoice["lines"]["data"]:
        details = line["parent"]["subscription_item_details"]
        out.append((details["subscription_item"], line["pricing"]["price_details"]["price"],
                    line["period"]["start"], line["period"]["end"],
                    Decimal(line["quantity_decimal"]), line["amount"], details["proration"]))
    return out


def invoices_of(client, cust):
    """Oldest first, through the API (listing by customer)."""
    return [i.to_dict() for i in reversed(client.v1.invoices.list({"customer": cust.id}).data)]


# --- billing mode ----------------------------------------------------------------


def test_billing_mode_defaults_to_flexible_on_dahlia_and_can_be_classic(client, cust, http,
                                                                       metered_price):
    # 2025-09-30.clover: "Subscriptions you create through the API now default to
    # flexible billing mode."
    flexible = subscribe(client, cust, metered_price)
    assert flexible.billing_mode.type == "flexible"
    assert flexible.billing_mode.updated_at == T0
    classic = subscribe(client, cust, metered_price, mode="classic")
    assert classic.billing_mode.type == "classic"
    old = http.post("/v1/subscriptions", headers={"Stripe-Version": "2025-03-31.basil"},
                    data={"customer": cust.id, "items[0][price]": metered_price.id}).json()
    assert old["billing_mode"]["type"] == "classic"
    r = http.post("/v1/subscriptions", data={"customer": cust.id,
                                             "items[0][price]": metered_price.id,
                                             "billing_mode[type]": "hybrid"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "billing_mode[type]"


# --- items ------------------------------------------------------------------------


def test_removing_an_item(client, cust, metered_price, other_meter_price, stripe_emulator,
                          clock):
    sub = subscribe(client, cust, metered_price, other_meter_price)
    keep, gone = sub["items"].data
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {
        "items": [{"id": gone.id, "deleted": True}], "proration_behavior": "none"})
    assert [i.id for i in got["items"].data] == [keep.id]
    assert [i.id for i in client.v1.subscription_items.list(
        {"subscription": sub.id}).data] == [keep.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscription_items.retrieve(gone.id)
    assert exc.value.code == "resource_missing" and exc.value.http_status == 404
    [event] = of_type(stripe_emulator, "customer.subscription.updated")
    assert event["created"] == MID and event["request"]["id"]
    previous = event["data"]["previous_attributes"]
    assert set(previous) == {"items"}
    assert [i["id"] for i in previous["items"]["data"]] == [keep.id, gone.id]
    assert [i["id"] for i in event["data"]["object"]["items"]["data"]] == [keep.id]
    # Items removed or changed are validated: an unknown id, an emptied subscription.
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"id": gone.id, "deleted": True}]})
    assert exc.value.param == "items[0][id]" and exc.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"id": keep.id, "deleted": True}]})
    assert exc.value.param == "items"


@pytest.mark.parametrize("mode", ["classic", "flexible"])
def test_replacing_a_metered_price_keeps_the_item_id(usage, client, cust, metered_price, price_b,
                                                     stripe_emulator, clock, mode):
    sub = subscribe(client, cust, metered_price, mode=mode)
    item = sub["items"].data[0]
    usage(100, T0 + HOUR)         # before the change, at price A
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id,
                                                              "price": price_b.id}]})
    [changed] = got["items"].data
    assert (changed.id, changed.price.id) == (item.id, price_b.id)  # same item, new price
    assert (changed.current_period_start, changed.current_period_end) == (T0, END)
    assert "quantity" not in changed
    usage(40, MID + HOUR)          # after the change, at price B
    stripe_emulator.advance_test_clock(clock.id, END)
    [invoice] = invoices_of(client, cust)
    assert invoice["billing_reason"] == "subscription_cycle"
    if mode == "classic":
        # "On future invoices, we reflect only usage that occurs after the update."
        assert lines(invoice) == [(item.id, price_b.id, MID, END, 40, 4, False)]
    else:
        # Flexible: "we create an invoice item that bills for previously reported
        # metered usage when you remove a metered price" (billed on the next invoice).
        assert sorted(lines(invoice), key=lambda l: l[2]) == [
            (item.id, metered_price.id, T0, MID, 100, 5, True),
            (item.id, price_b.id, MID, END, 40, 4, False)]
    assert invoice["total"] == sum(l[5] for l in lines(invoice))


@pytest.mark.parametrize("behavior", ["none", "create_prorations", "always_invoice"])
def test_flexible_removal_of_a_metered_price_follows_proration_behavior(usage, 
        client, cust, metered_price, other_meter_price, stripe_emulator, clock, behavior):
    sub = subscribe(client, cust, metered_price, other_meter_price, mode="flexible")
    kept, removed = sub["items"].data
    usage(7, T0 + HOUR, event_name="storage")   # removed item's usage
    usage(30, T0 + HOUR)                        # kept item's usage
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {
        "items": [{"id": removed.id, "deleted": True}], "proration_behavior": behavior})
    usage(5, MID + 60, event_name="storage")  # after removal: never billed
    if behavior == "always_invoice":
        [now_invoice] = invoices_of(client, cust)
        assert got.latest_invoice == now_invoice["id"]
        assert (now_invoice["billing_reason"], now_invoice["created"], now_invoice["status"],
                now_invoice["automatically_finalizes_at"]) == (
            "subscription_update", MID, "draft", MID + HOUR)
        assert lines(now_invoice) == [(removed.id, other_meter_price.id, T0, MID, 7, 7, True)]
        assert [e["type"] for e in stripe_emulator.events()
                if e["type"].startswith(("invoice.", "customer.subscription.updated"))] == [
            "customer.subscription.updated", "invoice.created"]
    else:
        assert invoices_of(client, cust) == [] and got.latest_invoice is None
    stripe_emulator.advance_test_clock(clock.id, END)
    cycle = invoices_of(client, cust)[-1]
    expected = [(kept.id, metered_price.id, T0, END, 30, 2, False)]
    if behavior == "create_prorations":
        expected.append((removed.id, other_meter_price.id, T0, MID, 7, 7, True))
    assert sorted(lines(cycle), key=lambda l: l[1] != metered_price.id) == expected


def test_a_metered_item_added_mid_period_bills_from_when_it_was_added(usage, 
        client, cust, metered_price, other_meter_price, stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price)
    usage(9, T0 + HOUR, event_name="storage")   # before it was added
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {"items": [{"price": other_meter_price.id}]})
    first, added = got["items"].data
    assert added.id != first.id and added.price.id == other_meter_price.id
    assert (added.current_period_start, added.current_period_end) == (T0, END)
    usage(4, MID + HOUR, event_name="storage")
    usage(1, END + 60, event_name="storage")    # next period
    stripe_emulator.advance_test_clock(clock.id, END + 120)
    [invoice] = invoices_of(client, cust)
    assert lines(invoice)[1] == (added.id, other_meter_price.id, MID, END, 4, 4, False)
    stripe_emulator.advance_test_clock(clock.id, NEXT_END)
    second = invoices_of(client, cust)[-1]
    assert lines(second)[1][2:5] == (END, NEXT_END, 1)
    with pytest.raises(stripe.InvalidRequestError) as exc:  # one item per price
        client.v1.subscriptions.update(sub.id, {"items": [{"price": metered_price.id}]})
    assert "same price" in exc.value.user_message


def test_item_updates_validate_like_stripe(client, cust, metered_price, stripe_emulator):
    sub = subscribe(client, cust, metered_price)
    item = sub["items"].data[0]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "quantity": 3}]})
    assert exc.value.param == "items[0][quantity]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"quantity": 3}]})
    assert exc.value.param == "items[0][price]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"proration_behavior": "sometimes"})
    assert exc.value.param == "proration_behavior"
    yearly = client.v1.prices.create({"currency": "usd", "product": metered_price.product,
                                      "unit_amount": 100, "recurring": {"interval": "year"}})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"price": yearly.id}]})
    assert "not supported" in exc.value.user_message
    assert of_type(stripe_emulator, "customer.subscription.updated") == []


# --- billing_cycle_anchor=now ----------------------------------------------------------


def test_billing_cycle_anchor_now_closes_the_period(usage, client, cust, metered_price,
                                                    stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price)
    item = sub["items"].data[0]
    usage(50, T0 + HOUR)
    usage(60, MID - 1)
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": "now",
                                                  "proration_behavior": "none"})
    new_end = ts(2026, 2, 25, 12)
    assert got.billing_cycle_anchor == MID
    [new] = got["items"].data
    assert (new.id, new.current_period_start, new.current_period_end) == (item.id, MID, new_end)
    [invoice] = invoices_of(client, cust)
    assert got.latest_invoice == invoice["id"]
    assert (invoice["billing_reason"], invoice["created"], invoice["period_start"],
            invoice["period_end"], invoice["status"]) == (
        "subscription_update", MID, T0, MID, "draft")
    assert lines(invoice) == [(item.id, metered_price.id, T0, MID, 110, 6, False)]
    [event] = of_type(stripe_emulator, "customer.subscription.updated")
    assert set(event["data"]["previous_attributes"]) == {"items", "billing_cycle_anchor",
                                                         "latest_invoice"}
    assert event["data"]["previous_attributes"]["billing_cycle_anchor"] == T0
    assert [e["type"] for e in stripe_emulator.events()][-2:] == [
        "customer.subscription.updated", "invoice.created"]
    # Late usage for the closed span still counts while it is a draft; then it finalizes.
    usage(10, MID - 2)
    usage(3, MID + 60)   # the new period
    stripe_emulator.advance_test_clock(clock.id, MID + HOUR)
    final = client.v1.invoices.retrieve(invoice["id"])
    assert (final.status, final.lines.data[0].quantity) == ("open", 120)
    assert [e["data"]["object"]["id"] for e in of_type(stripe_emulator, "invoice.finalized")] == [
        invoice["id"]]
    stripe_emulator.advance_test_clock(clock.id, new_end)
    cycle = invoices_of(client, cust)[-1]
    assert cycle["billing_reason"] == "subscription_cycle"
    assert lines(cycle) == [(item.id, metered_price.id, MID, new_end, 3, 0, False)]


# --- trials -------------------------------------------------------------------------


def test_trial_period_days_then_the_trial_ends(usage, client, cust, metered_price, stripe_emulator,
                                               clock):
    trial_end = T0 + 14 * DAY
    sub = subscribe(client, cust, metered_price, trial_period_days=14)
    assert (sub.status, sub.trial_start, sub.trial_end, sub.billing_cycle_anchor) == (
        "trialing", T0, trial_end, trial_end)
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (T0, trial_end)
    usage(500, T0 + HOUR)            # during the trial: not billed
    stripe_emulator.advance_test_clock(clock.id, trial_end + 60)
    usage(20, trial_end)             # the first paid period
    got = client.v1.subscriptions.retrieve(sub.id)
    first_end = ts(2026, 2, 24, 12)
    assert (got.status, got.trial_end) == ("active", trial_end)
    assert (got["items"].data[0].current_period_start,
            got["items"].data[0].current_period_end) == (trial_end, first_end)
    [invoice] = invoices_of(client, cust)
    assert (invoice["billing_reason"], invoice["created"], invoice["period_start"],
            invoice["period_end"], invoice["total"]) == (
        "subscription_cycle", trial_end, T0, trial_end, 0)
    assert lines(invoice) == [(item.id, metered_price.id, T0, trial_end, 0, 0, False)]
    created = of_type(stripe_emulator, "invoice.created")[0]["data"]["object"]
    assert not [k for k in created["lines"]["data"][0] if k.startswith("_")]
    assert not [k for k in invoice["lines"]["data"][0] if k.startswith("_")]
    [event] = of_type(stripe_emulator, "customer.subscription.updated")
    assert event["created"] == trial_end
    assert event["data"]["previous_attributes"]["status"] == "trialing"
    assert event["data"]["object"]["status"] == "active"
    stripe_emulator.advance_test_clock(clock.id, first_end)
    paid = invoices_of(client, cust)[-1]
    assert lines(paid) == [(item.id, metered_price.id, trial_end, first_end, 20, 1, False)]


def test_trial_end_now_ends_the_trial_early(usage, client, cust, metered_price, stripe_emulator,
                                            clock):
    sub = subscribe(client, cust, metered_price, trial_end=T0 + 30 * DAY)
    assert sub.status == "trialing"
    usage(500, T0 + HOUR)
    stripe_emulator.advance_test_clock(clock.id, MID)
    got = client.v1.subscriptions.update(sub.id, {"trial_end": "now"})
    assert (got.status, got.trial_end, got.billing_cycle_anchor) == ("active", MID, MID)
    item = got["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (MID, ts(2026, 2, 25, 12))
    [invoice] = invoices_of(client, cust)
    assert (invoice["billing_reason"], invoice["period_start"], invoice["period_end"]) == (
        "subscription_update", T0, MID)
    assert lines(invoice)[0][2:6] == (T0, MID, 0, 0)   # trial usage is not billed
    [event] = of_type(stripe_emulator, "customer.subscription.updated")
    assert {"status", "trial_end", "items", "latest_invoice"} <= set(
        event["data"]["previous_attributes"])
    assert of_type(stripe_emulator, "invoice.created")[0]["created"] == MID
    with pytest.raises(stripe.InvalidRequestError):  # no trial to change any more
        client.v1.subscriptions.update(sub.id, {"trial_end": MID + DAY})


def test_trial_end_can_move_while_trialing(client, cust, metered_price, stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price, trial_period_days=7)
    got = client.v1.subscriptions.update(sub.id, {"trial_end": T0 + 10 * DAY})
    assert (got.trial_end, got["items"].data[0].current_period_end) == (T0 + 10 * DAY,
                                                                        T0 + 10 * DAY)
    stripe_emulator.advance_test_clock(clock.id, T0 + 8 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "trialing"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        subscribe(client, cust, metered_price, trial_end=T0 - 1)
    assert exc.value.param == "trial_end"


# --- cancellation -------------------------------------------------------------------


def test_cancel_with_invoice_now_bills_unbilled_usage(usage, client, cust, metered_price,
                                                      stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price)
    item = sub["items"].data[0]
    usage(30, T0 + HOUR)
    stripe_emulator.advance_test_clock(clock.id, MID)
    canceled = client.v1.subscriptions.cancel(sub.id, {"invoice_now": True, "prorate": True})
    assert (canceled.status, canceled.canceled_at, canceled.ended_at) == ("canceled", MID, MID)
    [invoice] = invoices_of(client, cust)
    assert canceled.latest_invoice == invoice["id"]
    assert (invoice["billing_reason"], invoice["status"], invoice["created"],
            invoice["automatically_finalizes_at"], invoice["period_start"],
            invoice["period_end"]) == ("subscription_update", "draft", MID, MID + HOUR, T0, MID)
    assert lines(invoice) == [(item.id, metered_price.id, T0, MID, 30, 2, False)]
    assert [e["type"] for e in stripe_emulator.events()][-2:] == [
        "customer.subscription.deleted", "invoice.created"]
    usage(10, MID - 60)     # late, inside the billed span: counts
    usage(99, MID + 60)     # after the cancellation: never billed
    stripe_emulator.advance_test_clock(clock.id, MID + HOUR)
    final = client.v1.invoices.retrieve(invoice["id"])
    assert (final.status, final.lines.data[0].quantity, final.amount_due) == ("open", 40, 2)
    assert len(of_type(stripe_emulator, "invoice.finalized")) == 1
    listed = client.v1.invoices.list({"subscription": sub.id}).data
    assert [i.id for i in listed] == [invoice["id"]]
    stripe_emulator.advance_test_clock(clock.id, NEXT_END)
    assert len(invoices_of(client, cust)) == 1   # nothing after the end


def test_cancel_without_invoice_now_discards_usage(usage, client, cust, metered_price,
                                                   other_meter_price, stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price, other_meter_price, mode="flexible")
    usage(30, T0 + HOUR)
    usage(5, T0 + HOUR, event_name="storage")
    stripe_emulator.advance_test_clock(clock.id, MID)
    client.v1.subscriptions.update(sub.id, {"items": [{"id": sub["items"].data[1].id,
                                                       "deleted": True}]})  # a pending line
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.latest_invoice is None
    assert of_type(stripe_emulator, "invoice.created") == []
    assert len(of_type(stripe_emulator, "customer.subscription.deleted")) == 1
    stripe_emulator.advance_test_clock(clock.id, NEXT_END)
    assert invoices_of(client, cust) == []


def test_cancel_at_period_end_final_invoice_after_an_item_change(usage, 
        client, cust, metered_price, price_b, stripe_emulator, clock):
    sub = subscribe(client, cust, metered_price, mode="flexible")
    item = sub["items"].data[0]
    usage(10, T0 + HOUR)
    stripe_emulator.advance_test_clock(clock.id, MID)
    client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "price": price_b.id}],
                                            "cancel_at_period_end": True})
    usage(20, MID + HOUR)
    stripe_emulator.advance_test_clock(clock.id, END + HOUR + 1)
    [invoice] = invoices_of(client, cust)
    assert (invoice["billing_reason"], invoice["period_end"], invoice["status"]) == (
        "subscription_cycle", END, "open")
    assert sorted(lines(invoice), key=lambda l: l[2]) == [
        (item.id, metered_price.id, T0, MID, 10, 1, True),
        (item.id, price_b.id, MID, END, 20, 2, False)]
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert [e["type"] for e in stripe_emulator.events()
            if e["type"] in ("customer.subscription.deleted", "invoice.created",
                             "invoice.finalized")] == [
        "customer.subscription.deleted", "invoice.created", "invoice.finalized"]


# --- test-only status control -------------------------------------------------------


def test_status_control(client, cust, metered_price, stripe_emulator):
    sub = subscribe(client, cust, metered_price)
    stripe_emulator.set_subscription_status(sub.id, "past_due")
    got = client.v1.subscriptions.retrieve(sub.id)
    assert got.status == "past_due"
    [event] = of_type(stripe_emulator, "customer.subscription.updated")
    assert event["data"]["previous_attributes"] == {"status": "active"}
    r = httpx.post(f"{stripe_emulator.url}/_emulator/subscriptions/{sub.id}/status",
                   data={"status": "unpaid"})
    assert r.status_code == 200 and r.json()["status"] == "unpaid"
    assert [s.id for s in client.v1.subscriptions.list({"status": "unpaid"}).data] == [sub.id]
    stripe_emulator.set_subscription_status(sub.id, "incomplete_expired")
    got = client.v1.subscriptions.retrieve(sub.id)
    assert got.status == "incomplete_expired" and got.ended_at == T0
    assert [s.id for s in client.v1.subscriptions.list({"status": "ended"}).data] == [sub.id]
    assert len(of_type(stripe_emulator, "customer.subscription.updated")) == 3
    r = httpx.post(f"{stripe_emulator.url}/_emulator/subscriptions/{sub.id}/status",
                   data={"status": "active"})
    assert r.status_code == 400  # an ended subscription stays ended
    r = httpx.post(f"{stripe_emulator.url}/_emulator/subscriptions/sub_nope/status",
                   data={"status": "unpaid"})
    assert r.status_code == 404
    with pytest.raises(ValueError):
        stripe_emulator.set_subscription_status(sub.id, "paused")
