"""
Webhooks that close a billing period, through dj-stripe's real endpoint: signature
checked, handler queued after commit (django-q2, run inline here), usage reported once.
"""

import json
import time
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
import stripe
from django.urls import reverse
from django_q.conf import Conf
from djstripe.models import WebhookEndpoint, WebhookEventTrigger

from billing import stripe_api
from billing.models import UsageReport
from billing.services import usage_reporting
from billing.webhooks import periods_billed_by_draft_invoice, periods_closed_by_subscription_update

pytestmark = pytest.mark.django_db
SECRET = "whsec_test_EpsilonWebhookSecret0000"
HOUR = timedelta(hours=1)


# --- what closed: pure functions over Stripe's payloads -----------------------------


def item(item_id, start, end):
    return {"id": item_id, "object": "subscription_item", "current_period_start": start, "current_period_end": end}


def test_a_renewal_closes_each_items_previous_period():
    data = {
        "object": {"items": {"data": [item("si_1", 2000, 3000), item("si_2", 2000, 3000)]}},
        "previous_attributes": {
            "items": {"data": [item("si_1", 1000, 2000), item("si_2", 1000, 2000)]},
            "latest_invoice": "in_old",
        },
    }
    assert periods_closed_by_subscription_update(data) == [("si_1", 1000, 2000), ("si_2", 1000, 2000)]


def test_other_subscription_updates_close_nothing():
    metadata_change = {
        "object": {"items": {"data": [item("si_1", 1000, 2000)]}},
        "previous_attributes": {"metadata": {"plan": "old"}},
    }
    assert periods_closed_by_subscription_update(metadata_change) == []


def test_pre_dahlia_payloads_with_periods_on_the_subscription():
    data = {
        "object": {"items": {"data": [item("si_1", 2000, 3000)]}},
        "previous_attributes": {"current_period_start": 1000, "current_period_end": 2000},
    }
    assert periods_closed_by_subscription_update(data) == [("si_1", 1000, 2000)]


def draft_invoice(**overrides):
    line = {
        "object": "line_item",
        "period": {"start": 1000, "end": 2000},
        "parent": {"type": "subscription_item_details",
                   "subscription_item_details": {"subscription": "sub_1", "subscription_item": "si_1"}},
    }
    return {"object": "invoice", "status": "draft", "billing_reason": "subscription_cycle",
            "lines": {"data": [line]}, **overrides}


def test_a_draft_cycle_invoice_bills_its_lines_periods():
    assert periods_billed_by_draft_invoice(draft_invoice()) == [("si_1", 1000, 2000)]


@pytest.mark.parametrize("overrides", [{"status": "open"}, {"billing_reason": "manual"}])
def test_other_invoices_flush_nothing(overrides):
    assert periods_billed_by_draft_invoice(draft_invoice(**overrides)) == []


# --- through the endpoint -----------------------------------------------------------


@pytest.fixture
def webhook_endpoint(stripe_emulated):
    return WebhookEndpoint.objects.create(
        id="we_EpsilonTest0001",
        url="http://testserver/stripe/webhook/",
        secret=SECRET,
        livemode=False,
        enabled_events=["*"],
        status="enabled",
        api_version="2026-08-26.dahlia",
    )


@pytest.fixture
def tasks_inline(monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)


def signed_post(client, endpoint, payload: dict, secret=SECRET):
    body = json.dumps(payload, default=str)  # stripe-python decodes decimals as Decimal
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{body}", secret)
    return client.post(
        reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint.djstripe_uuid}),
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": f"t={timestamp},v1={signature}"},
    )


def renewal_event(billing, event_id="evt_Renewal0001"):
    """customer.subscription.updated as Stripe sends it when the period rolled over."""
    subscription = stripe_api.get_client().v1.subscriptions.retrieve(
        billing.subscription_id
    ).to_dict()  # the emulator rolls it forward on read
    old = billing.period
    previous_items = [
        {**i, "current_period_start": int(old.billing_start.timestamp()),
         "current_period_end": int(old.billing_end.timestamp())}
        for i in subscription["items"]["data"]
    ]
    return {
        "id": event_id, "object": "event", "type": "customer.subscription.updated",
        "api_version": "2026-08-26.dahlia", "created": int(time.time()), "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "data": {"object": subscription,
                 "previous_attributes": {"items": {"data": previous_items}, "latest_invoice": None}},
    }


def test_renewal_webhook_reports_the_closed_period_up_to_its_aligned_end(
    client, ended_billing, webhook_endpoint, tasks_inline, django_capture_on_commit_callbacks
):
    billing = ended_billing
    period = billing.period
    billing.source.add(billing.customer_id, period.start + HOUR, 40)
    billing.source.add(billing.customer_id, period.end - timedelta(minutes=1), 2)
    billing.source.add(billing.customer_id, period.end + timedelta(minutes=5), 7)  # next period's

    with mock_source(billing), django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, webhook_endpoint, renewal_event(billing))

    assert response.status_code == 200
    # The closed period is billed its usage up to the aligned end; the rest is the new
    # period's, reported into it by the same run (the ledger counts by customer).
    assert billing.stripe_total(start=period.billing_start, end=period.billing_end) == Decimal(42)
    assert billing.stripe_total(start=period.billing_end) == Decimal(7)
    closed = UsageReport.objects.get(billing_start=period.billing_start)
    assert (closed.trigger, closed.period_end, closed.usage_until) == ("webhook", period.end, period.end)


def test_replaying_the_same_event_reports_nothing_twice(
    client, ended_billing, webhook_endpoint, tasks_inline, django_capture_on_commit_callbacks
):
    billing = ended_billing
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 40)
    event = renewal_event(billing)

    with mock_source(billing), django_capture_on_commit_callbacks(execute=True):
        assert signed_post(client, webhook_endpoint, event).status_code == 200
    with mock_source(billing), django_capture_on_commit_callbacks(execute=True):
        assert signed_post(client, webhook_endpoint, event).status_code == 200

    assert billing.stripe_total() == Decimal(40)
    assert len(billing.stripe_events()) == 1


def test_a_bad_signature_is_refused_and_changes_nothing(
    client, ended_billing, webhook_endpoint, tasks_inline, django_capture_on_commit_callbacks
):
    billing = ended_billing
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 40)

    with mock_source(billing), django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = signed_post(client, webhook_endpoint, renewal_event(billing), secret="whsec_wrong")

    assert response.status_code == 400
    assert callbacks == []
    assert not UsageReport.objects.exists() and billing.stripe_events() == []
    assert WebhookEventTrigger.objects.get().valid is False


def mock_source(billing):
    return mock.patch.object(usage_reporting, "get_usage_source", return_value=billing.source)
