"""
Alerts: a failing report is told to ADMINS once, by mail and webhook, not again on the
next run; told again only if it comes back after it was resolved.
"""

from datetime import timedelta
from io import StringIO

import httpx
import pytest
import respx
from django.core import mail

from billing import tasks
from billing.models import Meter, UsageReport
from ops.alerts import check_and_notify
from ops.models import Alert
from tests.admin_helpers import patch_source

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
HOOK = "https://hooks.example.com/billing"


@pytest.fixture
def told(settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_WEBHOOK_URL = HOOK
    with respx.mock(assert_all_called=False) as router:
        hook = router.post(HOOK).mock(return_value=httpx.Response(200))
        router.route().pass_through()  # Stripe (the emulator) is reached for real
        yield hook


def scheduled_run(billing):
    """The hourly schedule's task, as django-q2 runs it."""
    with patch_source(billing.source):
        try:
            return tasks.report_usage_on_schedule()
        except tasks.ReportingFailed as exc:
            return str(exc)


def test_a_failing_report_is_told_once_and_again_only_when_it_comes_back(billing, told):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 8)
    billing.source.failing_meters["m1"] = "OpenMeter answered 503"

    assert "Failed" in scheduled_run(billing)
    assert len(mail.outbox) == 1 and told.call_count == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"] and "1 new billing problem" in message.subject
    assert billing.customer_id in message.body and "OpenMeter answered 503" in message.body
    assert "OpenMeter answered 503" in told.calls[0].request.content.decode()

    scheduled_run(billing)  # the same failure, the next hour: nobody told again
    assert len(mail.outbox) == 1 and told.call_count == 1
    assert Alert.objects.get().resolved_at is None

    del billing.source.failing_meters["m1"]
    scheduled_run(billing)  # it reports now: the problem is gone
    alert = Alert.objects.get()
    assert alert.resolved_at is not None and len(mail.outbox) == 1
    assert UsageReport.objects.filter(status="sent").exists(), list(UsageReport.objects.values_list("status", "value_sent", "error"))


def test_a_message_that_could_not_be_sent_is_sent_by_the_next_check(billing, settings):
    settings.ADMINS = []
    settings.ALERT_WEBHOOK_URL = HOOK
    UsageReport.objects.create(
        customer_id=billing.customer_id, subscription_id=billing.subscription_id, subscription_item_id=billing.item_id,
        price_id="price_x", meter_id=Meter.objects.get().id,
        source_meter_slug="m1", window_size="HOUR", billing_start=billing.period.billing_start,
        billing_end=billing.period.billing_end, period_start=billing.period.start, period_end=billing.period.end,
        usage_until=billing.period.start, sequence=1, value_sent=0, identifier="x-1", status="failed",
        error="Stripe 400: too old", trigger="command",
    )
    with respx.mock() as router:
        router.post(HOOK).mock(side_effect=[httpx.Response(502), httpx.Response(200)])
        first = check_and_notify()
        second = check_and_notify()
        third = check_and_notify()
    assert (first.sent, second.sent, third.sent) == (False, True, False)
    assert Alert.objects.get().notified_at is not None


def test_send_alerts_fails_when_nobody_can_be_told_and_messages_hide_secrets(billing, settings, told):
    from django.core.management import CommandError, call_command

    failed = UsageReport.objects.create(
        customer_id=billing.customer_id, subscription_id=billing.subscription_id, subscription_item_id=billing.item_id,
        price_id="price_x", meter_id=Meter.objects.get().id, source_meter_slug="m1", window_size="HOUR",
        billing_start=billing.period.billing_start, billing_end=billing.period.billing_end,
        period_start=billing.period.start, period_end=billing.period.end, usage_until=billing.period.start,
        sequence=1, value_sent=0, identifier="x-1", status="failed", trigger="command",
        error="Invalid API Key provided: sk_live_51SecretSecretSecret0000",
    )
    settings.ADMINS, settings.ALERT_WEBHOOK_URL = [], ""
    with pytest.raises(CommandError, match="1 problem\\(s\\) not told to anyone"):
        call_command("send_alerts", stdout=StringIO())

    settings.ADMINS = [("Ops", "ops@example.com")]
    call_command("send_alerts", stdout=StringIO())
    [message] = mail.outbox
    assert failed.customer_id in message.body and "sk_live_51Secret" not in message.body and "[redacted]" in message.body
