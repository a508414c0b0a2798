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


@pytest.mark.django_db(transaction=True)
def test_a_rejection_reaches_the_app_through_the_event_destination_and_the_usage_is_billed_once_fixed(
    live_server, billing, settings, monkeypatch
):
    # The v2 stream accepts events and validates them later. A stale mirror of the meter
    # makes the app send the customer under a key Stripe does not map: Stripe drops the
    # event and says so at the event destination; once the mirror is right again, the
    # next run sends the usage again and Stripe counts it.
    from django.core.management import call_command
    from django_q.conf import Conf
    from io import StringIO

    from billing.models import Meter, StripeEventDestination
    from billing.services import webhook_endpoints

    monkeypatch.setattr(Conf, "SYNC", True)  # the queued task runs inline
    settings.EPSILON = {**settings.EPSILON, "STRIPE_METER_EVENT_API": "v2"}
    ensured = webhook_endpoints.ensure_event_destination(live_server.url)
    assert ensured.created and StripeEventDestination.objects.get().secret.startswith("whsec_")
    assert not webhook_endpoints.ensure_event_destination(live_server.url).created  # found, not duplicated
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    Meter.objects.update(customer_payload_key="customer")  # stale: Stripe maps stripe_customer_id

    billing.run(as_of=billing.hour0 + 2 * HOUR)
    assert UsageReport.objects.get().status == "sent"  # the stream accepted it
    billing.emulator.validate_meter_events()
    assert billing.emulator.flush_webhooks()

    rejected = UsageReport.objects.get()
    assert rejected.status == "rejected" and "meter_event_no_customer_defined" in rejected.error
    assert billing.stripe_total() == Decimal(0)

    Meter.objects.update(customer_payload_key="stripe_customer_id")  # fixed
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    billing.emulator.validate_meter_events()
    assert billing.emulator.flush_webhooks()
    assert billing.stripe_total() == Decimal(7)
    assert list(UsageReport.objects.order_by("sequence").values_list("status", flat=True)) == ["rejected", "sent"]
    out = StringIO()
    call_command("epsilon_setup", "--webhook-url", live_server.url, "--no-schedule", stdout=out)
    assert f"Stripe event destination already exists: {ensured.stripe_id}" in out.getvalue()


def unsampled_error_report(meter_id: str, start, end, count: int = 1) -> dict:
    """An error report that counts errors without sampling them (Stripe samples some)."""
    return {
        "developer_message_summary": f"There are {count} invalid events",
        "reason": {"error_count": count, "error_types": [
            {"code": "meter_event_value_not_found", "error_count": count, "sample_errors": []},
        ]},
        "validation_start": start.isoformat(), "validation_end": end.isoformat(),
    }


@pytest.mark.django_db(transaction=True)
def test_errors_without_samples_are_matched_by_meter_window_and_summary(billing):
    from tests.admin_helpers import add_customer

    other = add_customer(billing, "other@example.com", days_ago=12)  # subscribed before the usage
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.source.add(other, billing.hour0 + HOUR, 5)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    dropped = UsageReport.objects.get(customer_id=billing.customer_id, status="sent")
    kept = UsageReport.objects.get(customer_id=other, status="sent")
    [event] = billing.emulator.meter_events(identifier=dropped.identifier)
    billing.emulator.store.set_meter_event_status(event["seq"], "invalid")
    sent_at = min(dropped.sent_at, kept.sent_at)

    outcome = meter_errors.apply_error_report(
        unsampled_error_report(dropped.meter_id, sent_at, sent_at + timedelta(seconds=10)),
        meter_id=dropped.meter_id, client=billing.emulator.client(),
    )

    dropped.refresh_from_db()
    kept.refresh_from_db()
    assert outcome.rejected == [dropped.identifier] and not outcome.unsure
    assert dropped.status == "rejected" and "found by its meter summary" in dropped.error
    assert kept.status == "sent"
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    assert billing.stripe_total() == Decimal(7) and billing.stripe_total(customer_id=other) == Decimal(5)
