"""
A Stripe meter that would bill Epsilon's reports wrong is refused: at setup, with one
clear line, and before each run, with a failed report and nothing sent.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from billing.models import Meter, UsageReport

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"event_time_window": "hour"}, "event_time_window='hour'"),
        ({"default_aggregation": {"formula": "count"}}, "aggregates with 'count'"),
    ],
)
def test_setup_refuses_a_meter_that_would_drop_or_miscount_reports(stripe_emulated, settings, options, expected):
    client = stripe_emulated.client()
    client.v1.billing.meters.create({
        "display_name": "Wrong meter", "event_name": settings.EPSILON["METER_EVENT_NAME"],
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"}, **options,
    })

    with pytest.raises(CommandError, match=expected):
        call_command("epsilon_setup")
    assert not Meter.objects.exists()


def test_a_run_sends_nothing_to_a_meter_that_keeps_only_the_last_event(billing):
    billing.source.add(billing.customer_id, billing.hour0 + timedelta(hours=1), 9)
    Meter.objects.update(aggregation_formula="last")  # changed in Stripe, mirrored

    [outcome] = billing.run(as_of=billing.hour0 + timedelta(hours=2)).outcomes

    assert outcome.status == "failed" and "only a 'sum' meter adds up" in outcome.error
    assert billing.stripe_total() == Decimal(0)
    assert UsageReport.objects.get().status == "failed"

    Meter.objects.update(aggregation_formula="sum")  # fixed: the usage is reported in full
    billing.run(as_of=billing.hour0 + timedelta(hours=2))
    assert billing.stripe_total() == Decimal(9)
