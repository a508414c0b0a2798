"""Reconciliation: source, ledger and Stripe's summaries per customer, meter and period."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from billing import stripe_api
from billing.models import PeriodReconciliation, UsageReport
from billing.services import reconciliation

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.fixture
def reported(billing):
    """Ten units reported for the current period, settled long enough to be checked."""
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    return billing


def check(billing, **options):
    return reconciliation.reconcile(settle_delay=timedelta(0), source=billing.source, **options)


def test_agreement_is_recorded_with_all_three_totals(reported):
    [result] = check(reported)
    assert (result.status, result.ledger_units, result.stripe_units, result.drift) == ("ok", 10, 10, 0)
    assert result.source_total == Decimal(10) and result.unreported_units == 0


def test_unreported_usage_is_not_drift(reported):
    reported.source.add(reported.customer_id, reported.hour0 + timedelta(minutes=90), 4)  # late
    [result] = check(reported)
    assert result.status == "ok" and result.unreported_units == Decimal(4)


def lose_in_stripe(billing, value):
    """Stripe ends up with a different total than the ledger (e.g. an event sent outside Epsilon)."""
    stripe_api.get_client().v1.billing.meter_events.create({
        "event_name": "epsilon_execution_duration",
        "payload": {"stripe_customer_id": billing.customer_id, "value": str(value)},
        "timestamp": int((billing.hour0 + HOUR).timestamp()),
    })


def test_drift_is_found_and_corrected_with_a_compensating_event(reported):
    lose_in_stripe(reported, 3)

    [found] = check(reported)
    assert (found.status, found.stripe_units, found.drift) == ("drift", 13, 3)

    [fixed] = check(reported, correct=True)
    assert fixed.status == "corrected"
    assert fixed.correction.value_sent == Decimal(-3) and fixed.correction.trigger == "reconcile"
    assert reported.stripe_total() == Decimal(10)

    [after] = check(reported)
    assert after.status == "ok"
    # The correction is not usage: the next report still sends nothing new.
    [outcome] = reported.run(as_of=reported.hour0 + 2 * HOUR).outcomes
    assert outcome.status == "skipped" and reported.stripe_total() == Decimal(10)


def test_periods_just_reported_are_left_for_later(reported):
    assert reconciliation.reconcile(settle_delay=timedelta(hours=1), source=reported.source) == []


def test_command_prints_each_period_and_fails_on_drift(reported):
    lose_in_stripe(reported, 2)
    out = StringIO()
    with mock.patch.object(reconciliation, "get_usage_source", return_value=reported.source):
        with pytest.raises(CommandError, match="1 period\\(s\\) disagree with Stripe.*--correct"):
            call_command("reconcile_usage", "--settle-minutes", "0", stdout=out)
        line = out.getvalue().splitlines()[0]
        assert f"customer: {reported.customer_id}, meter: m1" in line
        assert "source: 10.000000, ledger: 10, stripe: 12, drift: +2, status: drift" in line

        out = StringIO()
        call_command("reconcile_usage", "--settle-minutes", "0", "--correct", stdout=out)
        assert "status: corrected" in out.getvalue()
    assert PeriodReconciliation.objects.get().status == "corrected"
    assert UsageReport.objects.filter(trigger="reconcile").count() == 1


def test_a_customer_on_a_test_clock_ahead_of_real_time_is_checked_by_the_clocks_time(stripe_emulated):
    # Stripe stamps and sums a test-clock customer's events by the clock: capping the
    # summary at this machine's now would miss them and report false drift.
    import time
    from datetime import UTC, datetime

    from billing.services import stripe_setup, stripe_sync, usage_reporting
    from tests.usage_doubles import RecordedUsage

    client = stripe_emulated.client()
    ahead = datetime.fromtimestamp(int(time.time()), UTC).replace(minute=0, second=0) + timedelta(days=3)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(ahead.timestamp())})
    stripe_setup.ensure_epsilon_objects()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]
    customer = client.v1.customers.create({"email": "ahead@example.com", "test_clock": clock.id})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    stripe_sync.sync_customer(customer)
    stripe_sync.sync_subscription(subscription)
    source = RecordedUsage()
    source.add(customer.id, ahead + timedelta(minutes=30), 6)
    stripe_emulated.advance_test_clock(clock.id, int((ahead + 2 * HOUR).timestamp()))
    usage_reporting.report_usage(trigger=UsageReport.Trigger.COMMAND, source=source)
    assert Decimal(stripe_emulated.meter_event_totals(customer=customer.id)["total"]) == 6

    [result] = reconciliation.reconcile(settle_delay=timedelta(0), source=source)

    assert (result.status, result.ledger_units, result.stripe_units) == ("ok", 6, 6)


def test_usage_the_source_has_for_a_finished_period_and_no_report_counted_is_flagged(ended_billing):
    # Stripe agrees with the ledger, but a late event of the finished period never
    # reached either: reconciliation says so instead of "ok". (The run reports the period
    # days after Stripe finalized its invoice, while the mirror still shows it current:
    # the run reads Stripe's invoices first and carries the 10 to the next period instead
    # of sending them into the finalized invoice, so both hold 0 for the period.)
    billing = ended_billing
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    billing.run(as_of=billing.period.billing_end + timedelta(minutes=5))
    [first] = UsageReport.objects.all()
    assert (first.status, first.value_sent, first.usage_total) == ("carried", 0, 10)
    billing.source.add(billing.customer_id, billing.hour0 + 2 * HOUR, 3)  # late, unreported

    results = {r.period_start: r for r in check(billing)}
    result = results[billing.period.start]

    assert (result.status, result.ledger_units, result.stripe_units) == ("unreported", 0, 0)
    assert "+3 usage for this finished period" in result.error
    out = StringIO()
    with mock.patch.object(reconciliation, "get_usage_source", return_value=billing.source):
        with pytest.raises(CommandError, match="disagree"):
            call_command("reconcile_usage", "--settle-minutes", "0", stdout=out)
    assert "status: unreported" in out.getvalue()

    # Its invoice was finalized: --correct counts it in the ledger, carried on, and the
    # customer's next period bills it.
    [carried] = [r for r in check(billing, correct=True) if r.period_start == billing.period.start]
    assert carried.status == "corrected" and carried.correction.status == "carried"
    billing.run(as_of=billing.period.billing_end + timedelta(hours=3))
    [invoice] = [i for i in billing.emulator.invoices(customer=billing.customer_id)
                 if i["period_end"] == int(billing.period.billing_end.timestamp())]
    first_billed = invoice["lines"]["data"][0]["quantity"]
    assert first_billed == 0
    # What the finalized invoice billed plus what the next one will: the source's 13.
    assert first_billed + billing.stripe_total(start=billing.period.billing_end) == Decimal(13)


@pytest.mark.parametrize(("billed", "status"), [(10, "ok"), (7, "invoice")])
def test_the_finalized_invoice_is_a_third_truth(reported, billed, status):
    # Stripe's meter holds what the ledger sent, but its finalized invoice may have
    # billed less: reports that reached the meter after the invoice was final.
    from billing.models import FinalizedInvoiceLine

    report = UsageReport.objects.get(status="sent")
    FinalizedInvoiceLine.objects.create(
        invoice_id="in_test_1", customer_id=reported.customer_id, subscription_item_id=reported.item_id,
        period_start=report.billing_start, period_end=report.billing_end, quantity=billed,
        finalized_at=report.billing_end,
    )

    [result] = check(reported)

    assert (result.status, result.ledger_units, result.stripe_units) == (status, 10, 10)
    if status == "invoice":
        assert "billed 7 unit(s) for this period, the ledger sent 10" in result.error
