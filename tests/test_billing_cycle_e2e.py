"""
A whole billing cycle, end to end over HTTP: setup, usage, a Stripe test clock moved
past the period end, Stripe's webhooks delivered to the app's real endpoint, usage
reported before the invoice finalizes, and the invoices themselves.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django_q.conf import Conf

from billing.models import UsageReport
from billing.services import reconciliation, stripe_setup, stripe_sync, webhook_endpoints
from billing.services.periods import AlignedPeriod
from embedded_meter import services as meter_services
from tests.factories import execution
from tests.stripe_webhooks import replay

pytestmark = pytest.mark.django_db(transaction=True)
CENTS_PER_UNIT = Decimal(10)


def period_of(subscription):
    item = subscription["items"]["data"][0]
    return AlignedPeriod.of(
        datetime.fromtimestamp(item["current_period_start"], UTC),
        datetime.fromtimestamp(item["current_period_end"], UTC),
        "HOUR",
        service_starts=item["created"] >= item["current_period_start"],  # where service began
    )


def finalized_invoice(client, customer_id, period):
    invoices = client.v1.invoices.list({"customer": customer_id, "limit": 100}).data
    [invoice] = [i for i in invoices if i.period_end == int(period.billing_end.timestamp())]
    return invoice


@pytest.fixture
def cycle(live_server, stripe_emulated, monkeypatch):
    """A customer on a test clock, subscribed 40 days ago at 13:45, with the webhook endpoint set up."""
    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs the queued report inline
    emulator = stripe_emulated
    client = emulator.client()
    start = (datetime.now(UTC) - timedelta(days=40)).replace(hour=13, minute=45, second=0, microsecond=0)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp()), "name": "e2e"})
    stripe_setup.ensure_epsilon_objects()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]
    customer = client.v1.customers.create({"email": "cycle@example.com", "test_clock": clock.id})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    stripe_sync.sync_customer(customer)
    stripe_sync.sync_subscription(subscription)
    # Last: from here on Stripe's webhooks reach the live server, whose writes would
    # race this thread's on SQLite's shared in-memory test database.
    webhook_endpoints.ensure_webhook_endpoint(live_server.url)
    return emulator, client, clock, customer.id, period_of(subscription)


def advance(emulator, clock, moment):
    emulator.advance_test_clock(clock.id, int(moment.timestamp()))
    emulator.flush_webhooks()


def test_the_invoice_bills_the_usage_up_to_the_aligned_period_end_and_the_rest_next_time(cycle):
    emulator, client, clock, customer_id, first = cycle
    assert (first.billing_end.minute, first.end.minute) == (45, 0)
    meter_services.ingest_events([
        execution("a", customer_id, first.start + timedelta(hours=3), 30),
        execution("b", customer_id, first.end - timedelta(minutes=20), 12),  # 12:40, last window
        execution("c", customer_id, first.end + timedelta(minutes=15), 7),  # 13:15: after the aligned end
    ])

    # The period ends at 13:45: Stripe rolls the subscription and drafts the invoice;
    # its webhooks reach the app, which reports the period up to 13:00.
    advance(emulator, clock, first.billing_end + timedelta(minutes=10))

    reports = UsageReport.objects.filter(period_start=first.start, status="sent")
    assert {r.trigger for r in reports} == {"webhook"}
    assert sum(r.value_sent for r in reports) == 42
    assert reports.order_by("-usage_until").first().usage_until == first.end

    # Past the grace hour the invoice finalizes with exactly that usage.
    advance(emulator, clock, first.billing_end + timedelta(hours=2))
    invoice = finalized_invoice(client, customer_id, first)
    [line] = invoice.lines.data
    assert invoice.status == "open"
    assert line.quantity == 42
    assert Decimal(line.amount) == 42 * CENTS_PER_UNIT == Decimal(invoice.total)

    # The 13:00-13:45 usage is billed with the next period.
    second = period_of(client.v1.subscriptions.list({"customer": customer_id}).data[0])
    assert second.start == first.end
    meter_services.ingest_events([execution("d", customer_id, second.start + timedelta(days=3), 5)])
    call_command("report_usage", stdout=StringIO())  # the schedule's work, by the clock's time
    advance(emulator, clock, second.billing_end + timedelta(minutes=10))
    advance(emulator, clock, second.billing_end + timedelta(hours=2))

    next_invoice = finalized_invoice(client, customer_id, second)
    assert next_invoice.lines.data[0].quantity == 7 + 5
    assert Decimal(next_invoice.total) == 12 * CENTS_PER_UNIT


def test_replayed_cycle_webhooks_report_nothing_twice(cycle):
    emulator, client, clock, customer_id, first = cycle
    meter_services.ingest_events([execution("a", customer_id, first.start + timedelta(hours=3), 30)])
    advance(emulator, clock, first.billing_end + timedelta(minutes=10))
    sent_before = list(UsageReport.objects.filter(status="sent").values_list("identifier", flat=True))
    cycle_events = emulator.events("customer.subscription.updated") + emulator.events("invoice.created")
    assert len(cycle_events) == 2

    assert [replay(event) for event in cycle_events] == [200, 200]

    assert list(UsageReport.objects.filter(status="sent").values_list("identifier", flat=True)) == sent_before
    assert Decimal(emulator.meter_event_totals(customer=customer_id)["total"]) == 30


def next_period_billed(emulator, client, clock, customer_id, *, used: int) -> int:
    """Usage in the customer's next period, reported; its invoice finalized: what it billed."""
    second = period_of(client.v1.subscriptions.list({"customer": customer_id}).data[0])
    meter_services.ingest_events([execution("next", customer_id, second.start + timedelta(days=2), used)])
    call_command("report_usage", stdout=StringIO())
    advance(emulator, clock, second.billing_end + timedelta(minutes=10))
    advance(emulator, clock, second.billing_end + timedelta(hours=2))
    return finalized_invoice(client, customer_id, second).lines.data[0].quantity


def reconciled(period):
    """The reconciliation of a period: the source, the ledger, Stripe's meter and its invoice."""
    return {r.period_start: r for r in reconciliation.reconcile(settle_delay=timedelta(0))}[period.start]


def test_late_usage_reaches_the_draft_invoice_and_after_finalization_the_next_one(cycle):
    """
    Usage of a closed period that arrives during Stripe's grace hour is billed on its
    draft invoice; what arrives after the invoice finalized is never "sent" into it (it
    would sit in the meter, on no invoice): it is carried to the next period's invoice.
    """
    emulator, client, clock, customer_id, first = cycle
    meter_services.ingest_events([execution("on-time", customer_id, first.start + timedelta(hours=3), 30)])
    advance(emulator, clock, first.billing_end + timedelta(minutes=10))  # closed: drafted, reported

    meter_services.ingest_events([execution("late", customer_id, first.end - timedelta(minutes=40), 8)])
    call_command("report_usage", stdout=StringIO())  # within the grace hour
    advance(emulator, clock, first.billing_end + timedelta(hours=2))  # finalized
    assert finalized_invoice(client, customer_id, first).lines.data[0].quantity == 30 + 8

    meter_services.ingest_events([execution("too-late", customer_id, first.end - timedelta(minutes=20), 5)])
    out = StringIO()
    call_command("report_usage", stdout=out)
    carried = UsageReport.objects.get(billing_start=first.billing_start, status="carried")
    assert "carried to the customer's next period" in carried.error and "status: carried" in out.getvalue()
    assert Decimal(emulator.meter_event_totals(customer=customer_id, end=int(first.billing_end.timestamp()))["total"]) == 38

    assert next_period_billed(emulator, client, clock, customer_id, used=4) == 5 + 4
    assert finalized_invoice(client, customer_id, first).lines.data[0].quantity == 38  # never changed

    # Three truths agree for the first period: the ledger, Stripe's meter and its invoice.
    checked = reconciled(first)
    assert (checked.status, checked.ledger_units, checked.stripe_units) == ("ok", 38, 38), checked.error


def outage_spanning_finalization(emulator, clock, customer_id, first, settings):
    """Stripe's meter event API fails from the period's end until after its invoice finalized."""
    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 0}
    meter_services.ingest_events([execution("on-time", customer_id, first.start + timedelta(hours=3), 30)])
    emulator.set_faults(rate_500=1.0)  # meter event calls only: nothing recorded
    advance(emulator, clock, first.billing_end + timedelta(minutes=10))  # drafted; the closing report is in doubt
    closing = UsageReport.objects.get(billing_start=first.billing_start, status="pending")
    advance(emulator, clock, first.billing_end + timedelta(hours=2))  # finalized without it
    emulator.set_faults(rate_500=0.0)
    return closing


def test_an_outage_spanning_finalization_carries_what_stripe_took_too_late_to_the_next_invoice(cycle, settings):
    """
    The period's closing report could not reach Stripe until its invoice had finalized
    (billing 0). Resent afterwards, Stripe's meter takes it, in a period no invoice will
    bill again: the ledger says so on the row and bills those units on the next invoice.
    """
    emulator, client, clock, customer_id, first = cycle
    closing = outage_spanning_finalization(emulator, clock, customer_id, first, settings)
    assert finalized_invoice(client, customer_id, first).lines.data[0].quantity == 0

    out = StringIO()
    call_command("report_usage", stdout=out)  # the outage is over: the pending report is resent
    closing.refresh_from_db()
    assert (closing.status, closing.value_sent, closing.unbilled) == ("sent", 30, 30), closing.error
    assert "after its invoice was finalized" in closing.error and "carried to the customer's next period" in closing.error
    first_end = int(first.billing_end.timestamp())
    assert Decimal(emulator.meter_event_totals(customer=customer_id, end=first_end)["total"]) == 30

    assert next_period_billed(emulator, client, clock, customer_id, used=4) == 30 + 4
    assert finalized_invoice(client, customer_id, first).lines.data[0].quantity == 0  # never changed

    checked = reconciled(first)
    assert (checked.status, checked.ledger_units, checked.stripe_units) == ("ok", 30, 30), checked.error


def test_with_late_usage_recorded_only_nothing_reaches_a_later_invoice_and_the_rows_say_why(cycle, settings):
    """EPSILON_LATE_USAGE=record: late usage and too-late sends are flagged rows, billed nowhere."""
    emulator, client, clock, customer_id, first = cycle
    settings.EPSILON = {**settings.EPSILON, "LATE_USAGE": "record"}
    outage_spanning_finalization(emulator, clock, customer_id, first, settings)
    meter_services.ingest_events([execution("too-late", customer_id, first.end - timedelta(minutes=20), 5)])
    call_command("report_usage", stdout=StringIO())  # resends the closing report; records the late usage

    rows = {r.status: r for r in UsageReport.objects.filter(billing_start=first.billing_start)}
    assert rows["sent"].unbilled == 0 and "recorded only" in rows["sent"].error, rows["sent"].error
    assert rows["late"].value_sent == 0 and "recorded only" in rows["late"].error, rows["late"].error

    assert next_period_billed(emulator, client, clock, customer_id, used=4) == 4
    assert finalized_invoice(client, customer_id, first).lines.data[0].quantity == 0

    flagged = reconciled(first)
    assert flagged.status == "invoice", flagged.error  # flagged for an operator
