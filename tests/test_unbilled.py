"""
Units Stripe's meter took after their period's invoice was final (`unbilled`): the
rules that decide how many there are and that carry them on exactly once, whatever
else happens to the period's rows (corrections, other items' lines, rejections, a
change of EPSILON_LATE_USAGE). The end-to-end story, judged by Stripe's invoices, is in
test_billing_cycle_e2e.py.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import FinalizedInvoiceLine, UsageReport
from billing.services import invoices, ledger, meter_errors, targets
from tests.factories import PERIOD_START, make_meter, make_report

pytestmark = pytest.mark.django_db
MONTH = timedelta(days=30)
ITEM = "si_TestItem0001"


@pytest.fixture
def meter():
    return make_meter()


def closed_period_sent(meter, value, **overrides) -> UsageReport:
    """A closed period's report of `value` units, sent."""
    fields = {"usage_until": PERIOD_START + MONTH, "usage_total": Decimal(value), "usage_delta": Decimal(value),
              "value_sent": Decimal(value), "status": "sent", "sent_at": timezone.now()}
    return make_report(meter, **{**fields, **overrides})


def finalized(billed, item=ITEM):
    return FinalizedInvoiceLine.objects.create(
        invoice_id=f"in_{item}", customer_id="cus_TestCustomer0001", subscription_item_id=item,
        period_start=PERIOD_START, period_end=PERIOD_START + MONTH, quantity=billed, finalized_at=PERIOD_START + MONTH,
    )


def carry_into_next_period(meter) -> Decimal:
    nxt = make_report(meter, identifier="next-1", period_start=PERIOD_START + MONTH,
                      period_end=PERIOD_START + 2 * MONTH, usage_until=PERIOD_START + MONTH + timedelta(hours=1),
                      value_sent=0, usage_total=0, status="skipped")
    try:
        return ledger.carry_into(targets.ledger_target(nxt))
    finally:
        nxt.delete()


def account(*rows):
    invoices.account_rows(rows)
    for row in rows:
        row.refresh_from_db()


def test_what_the_invoice_did_not_bill_is_carried_once_however_often_it_is_accounted(meter):
    row = closed_period_sent(meter, 30)
    finalized(0)
    account(row)
    account(row)  # replayed webhooks, invoice list refreshes
    assert row.unbilled == 30 and "carried to the customer's next period" in row.error
    assert carry_into_next_period(meter) == 30


def test_a_correction_that_restored_stripe_is_not_taken_for_late_units(meter):
    # Stripe lost 5 of the 100 sent; reconciliation's +5 restored them; the invoice billed 100.
    row = closed_period_sent(meter, 100)
    correction = closed_period_sent(meter, 5, sequence=2, identifier="correction", trigger="reconcile", usage_total=None)
    finalized(100)
    account(row, correction)
    assert (row.unbilled, correction.unbilled) == (0, 0)
    assert carry_into_next_period(meter) == 0


def test_only_the_periods_own_metered_item_counts_as_billed(meter):
    row = closed_period_sent(meter, 10)
    finalized(1, item="si_LicensedSeat")  # another item of the invoice: not this meter's
    account(row)
    assert row.unbilled == 0  # not known yet: nothing is assumed
    finalized(10)
    account(row)
    assert row.unbilled == 0


def test_a_line_billed_in_advance_is_not_the_periods_invoice(meter):
    row = closed_period_sent(meter, 10)
    FinalizedInvoiceLine.objects.create(
        invoice_id="in_first", customer_id="cus_TestCustomer0001", subscription_item_id=ITEM,
        period_start=PERIOD_START, period_end=PERIOD_START + MONTH, quantity=0, finalized_at=PERIOD_START,
    )
    account(row)
    assert row.unbilled == 0


def test_a_row_stripe_rejects_gives_its_unbilled_units_back(meter):
    row = closed_period_sent(meter, 30)
    finalized(0)
    account(row)
    assert carry_into_next_period(meter) == 30

    meter_errors.apply_error_report({"reason": {"error_count": 1, "error_types": [{
        "code": "meter_event_customer_not_found", "sample_errors": [{"request": {"identifier": row.identifier}}],
    }]}})

    row.refresh_from_db()
    assert (row.status, row.unbilled) == ("rejected", 0)
    assert carry_into_next_period(meter) == 0  # the period's next claim carries the usage itself, once


def test_switching_to_record_only_never_takes_back_what_was_carried(meter, settings):
    row = closed_period_sent(meter, 30)
    finalized(0)
    account(row)
    settings.EPSILON = {**settings.EPSILON, "LATE_USAGE": "record"}
    later = closed_period_sent(meter, 4, sequence=2, identifier="later")
    account(row, later)
    assert (row.unbilled, later.unbilled) == (0, 30)  # moved to the latest row, not taken back
    assert "the rest recorded only" in later.error and row.error == ""
    assert carry_into_next_period(meter) == 30


def test_a_line_billed_in_advance_does_not_mark_its_period_final():
    """A line finalized before its period ended (a licensed price, billed in advance) says nothing of usage."""
    start = PERIOD_START
    end = start + timedelta(days=30)
    common = {"customer_id": "cus_1", "subscription_item_id": "si_1", "period_start": start, "period_end": end, "quantity": 1}
    FinalizedInvoiceLine.objects.create(invoice_id="in_advance", finalized_at=start + timedelta(hours=1), **common)
    assert invoices.finalized_ends({"cus_1"}) == set()
    FinalizedInvoiceLine.objects.create(invoice_id="in_arrears", finalized_at=end + timedelta(hours=1), **common)
    assert invoices.finalized_ends({"cus_1"}) == {("si_1", end)}
