"""The database itself refuses ledger rows that could send the same usage twice."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import UsageReport
from tests.factories import PERIOD_START, make_meter, make_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def meter():
    return make_meter()


def assert_refused(**fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_report(fields.pop("meter"), **fields)


def test_the_same_sequence_of_a_period_is_refused(meter):
    make_report(meter, sequence=1, status="sent", sent_at=timezone.now())
    assert_refused(meter=meter, sequence=1, identifier="another-identifier")


def test_only_one_report_of_a_period_may_be_in_flight(meter):
    make_report(meter, sequence=1, status="pending")
    assert_refused(meter=meter, sequence=2, status="pending")
    # Once the first is settled the period can be reported again.
    UsageReport.objects.filter(sequence=1).update(status="sent", sent_at=timezone.now())
    assert make_report(meter, sequence=2, status="pending").pk


def test_a_second_item_of_the_same_customer_meter_and_period_is_the_same_ledger_period(meter):
    # Stripe sums by customer and meter: another item cannot open the usage again.
    make_report(meter, sequence=1)
    assert_refused(meter=meter, sequence=1, identifier="other-item", subscription_item_id="si_Other")


def test_pending_reports_of_other_customers_or_periods_are_independent(meter):
    make_report(meter, sequence=1)
    make_report(meter, sequence=1, identifier="other-customer", customer_id="cus_Other")
    make_report(
        meter,
        sequence=1,
        identifier="next-period",
        period_start=PERIOD_START + timedelta(days=30),
        period_end=PERIOD_START + timedelta(days=60),
        usage_until=PERIOD_START + timedelta(days=31),
    )
    assert UsageReport.objects.filter(status="pending").count() == 3


def test_an_identifier_is_never_reused(meter):
    make_report(meter, sequence=1, identifier="epsilon:si_1:mtr_1:20261101T0000Z:1")
    assert_refused(
        meter=meter,
        sequence=1,
        subscription_item_id="si_Other",
        identifier="epsilon:si_1:mtr_1:20261101T0000Z:1",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"period_end": PERIOD_START},  # empty period
        {"usage_until": PERIOD_START - timedelta(hours=1)},  # before the period
        {"usage_until": PERIOD_START + timedelta(days=31)},  # after the period
        {"sequence": 0},
        {"status": "lost"},
        {"status": "sent", "sent_at": None},  # sent without saying when
    ],
    ids=["empty-period", "until-before", "until-after", "sequence-0", "unknown-status", "sent-no-time"],
)
def test_inconsistent_rows_are_refused(meter, fields):
    assert_refused(meter=meter, **fields)


def test_usage_values_keep_their_decimals(meter):
    make_report(meter, usage_total=Decimal("12.345678"), value_sent=Decimal("-0.000001"))
    report = UsageReport.objects.get()
    assert report.usage_total == Decimal("12.345678")
    assert report.value_sent == Decimal("-0.000001")


@pytest.mark.django_db(transaction=True)
def test_a_send_that_outlasts_its_lease_keeps_its_rows_from_other_runs(meter):
    # While a run sends, its rows' lease is renewed, so another run finds nothing to take.
    from billing.services import ledger

    report = make_report(meter, sequence=1, status="pending")
    UsageReport.objects.filter(pk=report.pk).update(updated=timezone.now() - timedelta(hours=1))
    keeper = ledger.LeaseKeeper([report.pk], lease_seconds=60)

    assert keeper.renew() == 1
    resend, too_old = ledger.claim_orphans(lease=timedelta(seconds=60))
    assert (resend, too_old) == ([], [])
    with keeper:  # as the run's send does: no thread left behind
        assert keeper._thread is not None and keeper._thread.is_alive()
    assert not keeper._thread.is_alive()
    UsageReport.objects.filter(pk=report.pk).update(status="sent", sent_at=timezone.now())
    assert keeper.renew() == 0  # a settled row is left alone


def test_a_run_reads_thousands_of_ledger_periods_in_one_query(meter, settings, django_assert_max_num_queries):
    # More periods than SQLite's expression depth (1,000): no OR chain per period.
    from billing.services import targets

    now = timezone.now()
    start = now - timedelta(days=3)
    UsageReport.objects.bulk_create([
        UsageReport(
            customer_id=f"cus_Many{n:05d}", subscription_id="sub_M", subscription_item_id=f"si_M{n}", price_id="price_M",
            meter=meter, source_meter_slug="m1", window_size="HOUR", billing_start=start, billing_end=now + timedelta(days=27),
            period_start=start, period_end=now + timedelta(days=27), usage_until=now - timedelta(hours=1), sequence=1,
            usage_total=Decimal(n), value_sent=Decimal(n), identifier=f"many-{n}", status="sent", sent_at=now,
            trigger="command",
        )
        for n in range(1500)
    ])
    with django_assert_max_num_queries(10):
        owed = targets.current_targets()
    assert len(owed) == 1500 and not any(t.live for t in owed)
