"""Small builders for test rows; the values are what Stripe and the engine would write."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from billing.models import Meter, UsageReport, WindowSize

PERIOD_START = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)


def make_meter(**overrides) -> Meter:
    fields = {
        "id": "mtr_test_61Tx0000000000000000000000",
        "display_name": "Epsilon execution duration",
        "event_name": "epsilon_execution_duration",
        "source_meter_slug": "m1",
        "window_size": WindowSize.HOUR,
    }
    return Meter.objects.create(**{**fields, **overrides})


def make_report(meter: Meter, **overrides) -> UsageReport:
    sequence = overrides.get("sequence", 1)
    fields = {
        "customer_id": "cus_TestCustomer0001",
        "subscription_id": "sub_TestSubscription0001",
        "subscription_item_id": "si_TestItem0001",
        "price_id": "price_TestPrice0001",
        "meter": meter,
        "source_meter_slug": meter.source_meter_slug,
        "window_size": meter.window_size,
        "period_start": PERIOD_START,
        "period_end": PERIOD_START + timedelta(days=30),
        "usage_until": PERIOD_START + timedelta(hours=5),
        "sequence": sequence,
        "usage_total": Decimal("10"),
        "value_sent": Decimal("10"),
        "identifier": f"test-identifier-{sequence}",
        "trigger": UsageReport.Trigger.COMMAND,
    }
    fields.update(overrides)
    fields.setdefault("billing_start", fields["period_start"])
    fields.setdefault("billing_end", fields["period_end"])
    return UsageReport.objects.create(**fields)


def execution(event_id: str, subject: str, moment: datetime, billed_seconds: int, source: str = "tests") -> dict:
    """An Epsilon execution as a CloudEvent for the embedded meter (m1 sums billed_seconds)."""
    return {
        "specversion": "1.0", "id": event_id, "source": source, "type": "epsilon.execution",
        "subject": subject, "time": moment.isoformat(), "data": {"billed_seconds": billed_seconds},
    }
