"""dj-stripe syncs what the local Stripe emulator answers: the emulator's own tests
(stripe_emulator/tests) check its wire format without Django; this checks that the
app's Stripe library of record takes the emulator's drafted invoice as Stripe's."""

import pytest

T0 = 1768046400        # 2026-01-10 12:00 UTC
END = 1770724800       # 2026-02-10 12:00 UTC, the first period's end


@pytest.fixture
def draft(stripe_emulated):
    client = stripe_emulated.client()
    meter = client.v1.billing.meters.create({
        "display_name": "Execution seconds", "event_name": "execution_seconds",
        "default_aggregation": {"formula": "sum"}})
    product = client.v1.products.create({"name": "Epsilon"})
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount": 10,
                                     "recurring": {"interval": "month", "usage_type": "metered",
                                                   "meter": meter.id}})
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = client.v1.customers.create({"test_clock": clock.id, "email": "a@example.com"})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "timestamp": T0 + 60,
        "payload": {"stripe_customer_id": customer.id, "value": "10"}})
    stripe_emulated.advance_test_clock(clock.id, END + 60)
    return client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)


@pytest.mark.django_db
def test_dj_stripe_syncs_the_emulators_invoice(stripe_emulated, draft):
    from djstripe.models import Invoice, LineItem

    api_invoice = Invoice(id=draft.id).api_retrieve(api_key=stripe_emulated.api_key)
    synced = Invoice.sync_from_stripe_data(api_invoice, api_key=stripe_emulated.api_key)
    assert (synced.id, synced.status, synced.total, synced.customer.id) == (
        draft.id, "draft", 100, draft.customer)
    assert synced.billing_reason == "subscription_cycle"
    line = LineItem.objects.get(id=draft.lines.data[0].id)  # the sync hook swallows errors
    assert (line.amount, line.subscription.id) == (100, draft.parent.subscription_details
                                                   .subscription)
