"""
Stripe's own numbers on a customer's page: "At Stripe" is Stripe's meter summary
(cached, its age shown, read again on request) beside the ledger's figure with drift
flagged; the upcoming invoice is Stripe's preview (lines, tax, total); the invoices
dj-stripe mirrors are listed with their metered quantity against the ledger.
"""

import html as html_text
import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from djstripe.models import Customer, Invoice

from billing import stripe_api
from tests.admin_helpers import source  # noqa: F401 (source: a fixture)

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()



def figure(html, name):
    match = re.search(rf'data-figure="{name}">\s*<dt>.*?</dt>(.*?)</div>', html, re.DOTALL)
    assert match, f"no {name} figure"
    return " ".join(html_text.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def page(admin_client, customer, **query):
    return admin_client.get(reverse("admin:djstripe_customer_change", args=[customer.pk]), query).content.decode()


def send_straight_to_stripe(billing, value, moment):
    """A meter event Epsilon did not send (another system, a manual fix): drift."""
    stripe_api.get_client().v1.billing.meter_events.create({
        "event_name": "epsilon_execution_duration",
        "payload": {"stripe_customer_id": billing.customer_id, "value": str(value)},
        "timestamp": int(moment.timestamp()),
    })


def test_at_stripe_is_stripes_meter_summary_cached_and_read_again_on_request(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 40)
    billing.run(as_of=billing.hour0 + 3 * HOUR)
    customer = Customer.objects.get()

    first = figure(page(admin_client, customer), "at-stripe")
    assert first.startswith("40 units Stripe's meter summary, read ") and "in agreement" in first

    send_straight_to_stripe(billing, 25, billing.hour0 + 2 * HOUR)
    cached = figure(page(admin_client, customer), "at-stripe")
    assert cached.startswith("40 units")  # within the cache's time: Stripe is not asked again

    html = page(admin_client, customer, stripe="refresh")
    fresh = figure(html, "at-stripe")
    assert fresh.startswith("65 units ≠ Drift Stripe's meter summary")
    assert "ledger sent 40 units: drift +25 (Stripe − ledger)" in fresh
    assert "epsilon-figure-drift" in html
    assert billing.stripe_total() == 65  # what the emulator holds, read directly


def test_the_upcoming_invoice_is_stripes_preview_with_lines_tax_and_total(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 1128)
    billing.run(as_of=billing.hour0 + 3 * HOUR)

    html = page(admin_client, Customer.objects.get())

    assert figure(html, "estimate").startswith("$112.80 Stripe's preview, for the period to ")
    table = re.search(r'<table class="epsilon-preview".*?</table>', html, re.DOTALL).group(0)
    cells = " ".join(re.sub(r"<[^>]+>", " ", table).split())
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d → \d{4}-\d\d-\d\d \d\d:\d\d 1,128 \$112.80", cells)
    assert "Subtotal $112.80 Tax $0.00 Total $112.80" in cells


def test_stripe_unreachable_is_said_not_hidden(admin_client, billing, source, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    html = page(admin_client, Customer.objects.get())
    assert figure(html, "at-stripe").startswith("unknown Stripe's meter summary could not be read: Could not reach")
    assert "Stripe's invoice preview: Could not reach" in figure(html, "estimate")


def test_invoices_show_their_metered_quantity_against_the_ledger(admin_client, ended_billing, source, monkeypatch):
    """The closed period's invoice was final before its usage was reported: it billed 0, the ledger 30."""
    from billing.services import invoices

    billing = ended_billing
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 30)
    # The run does not see the finalization (it came between the run's look at Stripe's
    # invoices and its event landing), so it sends the 30 into the finalized invoice.
    monkeypatch.setattr(invoices, "refresh_finalized", lambda *args, **kwargs: None)
    billing.run(as_of=billing.period.billing_end + 2 * HOUR)
    monkeypatch.undo()
    client = stripe_api.get_client()
    for invoice in client.v1.invoices.list({"customer": billing.customer_id}).auto_paging_iter():
        Invoice.sync_from_stripe_data(Invoice(id=invoice.id).api_retrieve())
    [invoice] = Invoice.objects.all()

    html = page(admin_client, Customer.objects.get())

    row = re.search(rf'<tr data-invoice="{invoice.id}">(.*?)</tr>', html, re.DOTALL).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", row).split())
    assert f"{billing.period.billing_start:%Y-%m-%d %H:%M} → {billing.period.billing_end:%Y-%m-%d %H:%M}" in text
    billed = sum(line.quantity for line in client.v1.invoices.retrieve(invoice.id).lines.data)
    assert text.endswith(f" {billed} 30 ≠ {billed - 30:+} ${billed / 10:.2f}".replace("+0", "0")), text


def test_a_period_that_began_mid_minute_is_read_on_minute_bounds(admin_client, billing, source):
    """Stripe takes summary bounds on whole minutes only: a subscription begun at hh:mm:37 still reads."""
    import time
    from datetime import UTC, datetime

    from djstripe.models import Price

    from billing.services import stripe_sync

    client = stripe_api.get_client()
    start = datetime.now(UTC).replace(second=37, microsecond=0) - timedelta(days=2)
    billing.emulator.set_time(int(start.timestamp()), freeze=True)
    try:
        customer = client.v1.customers.create({"email": "mid@example.com", "name": "Mid Minute"})
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": Price.objects.get().id}]})
        stripe_sync.sync_customer(customer)
        stripe_sync.sync_subscription(subscription)
    finally:
        billing.emulator.set_time(int(time.time()), freeze=False)
    billing.source.add(customer.id, start + 2 * HOUR, 9)
    billing.run(as_of=start + 4 * HOUR, customer_ids=[customer.id])

    tile = figure(page(admin_client, Customer.objects.get(id=customer.id)), "at-stripe")

    assert tile.startswith("9 units Stripe's meter summary, read ") and "in agreement" in tile
