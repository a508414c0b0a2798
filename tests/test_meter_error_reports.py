"""
Stripe's asynchronous verdicts: an event Stripe accepted and then dropped is sent again,
and the event destination takes only signed thin events.
"""

import json
import time
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
import stripe
from django.test import Client

from billing.models import UsageReport
from billing.services import meter_errors

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def error_report(identifier: str) -> dict:
    """The data of a `v1.billing.meter.error_report_triggered` event, as Stripe documents it."""
    return {
        "developer_message_summary": "There is 1 invalid event",
        "reason": {"error_count": 1, "error_types": [{
            "code": "meter_event_customer_not_found", "error_count": 1,
            "sample_errors": [{"error_message": "No customer found.", "request": {"identifier": identifier}}],
        }]},
        "validation_start": "2026-12-01T10:00:00.000Z", "validation_end": "2026-12-01T10:00:10.000Z",
    }


def test_an_event_stripe_dropped_after_accepting_it_is_sent_again(billing):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    report = UsageReport.objects.get(status="sent")
    [event] = billing.emulator.meter_events(identifier=report.identifier)
    billing.emulator.store.set_meter_event_status(event["seq"], "invalid")  # Stripe's async check dropped it
    assert billing.stripe_total() == Decimal(0)

    outcome = meter_errors.apply_error_report(error_report(report.identifier))
    billing.run(as_of=billing.hour0 + 2 * HOUR)

    report.refresh_from_db()
    assert outcome.rejected == [report.identifier] and report.status == "rejected"
    assert "meter_event_customer_not_found" in report.error
    assert billing.stripe_total() == Decimal(7)  # sent again, under a new identifier
    assert UsageReport.objects.filter(status="sent").exclude(identifier=report.identifier).count() == 1


def test_the_event_destination_queues_only_signed_meter_error_reports(settings):
    settings.STRIPE_EVENT_DESTINATION_SECRET = "whsec_destination"
    body = json.dumps({"id": "evt_test_1", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered",
                       "related_object": {"id": "mtr_1", "type": "billing.meter"}})
    stamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{stamp}.{body}", "whsec_destination")
    client = Client()

    with mock.patch("billing.views.async_task") as queued:
        unsigned = client.post("/stripe/events/", body, content_type="application/json")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("django.db.transaction.on_commit", lambda fn: fn())
            signed = client.post("/stripe/events/", body, content_type="application/json",
                                 HTTP_STRIPE_SIGNATURE=f"t={stamp},v1={signature}")

    assert unsigned.status_code == 400 and "not a signed Stripe event" in unsigned.json()["error"]
    assert signed.status_code == 200
    queued.assert_called_once()
    assert queued.call_args.args == ("billing.tasks.apply_meter_error_report", "evt_test_1")
