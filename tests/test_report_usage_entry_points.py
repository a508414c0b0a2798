"""The `report_usage` command and the admin's "Report usage now": thin doors to one service."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from djstripe.models import Customer, Subscription

from billing.models import UsageReport
from billing.services import usage_reporting

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)

LINE = (
    "stripe_customer: {customer}, stripe_price: {price}, meter: m1, total_usage: {total}, "
    "from: {start:%Y-%m-%d %H:%M:%S} +0000 UTC, to: {until:%Y-%m-%d %H:%M:%S} +0000 UTC"
)


@pytest.fixture
def recorded_source(billing):
    with mock.patch.object(usage_reporting, "get_usage_source", return_value=billing.source):
        yield billing.source


def run_command(*args):
    out = StringIO()
    call_command("report_usage", *args, stdout=out)
    return out.getvalue().splitlines()


def test_command_prints_the_original_line_per_report_then_a_summary(billing, recorded_source):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, "10.25")
    until = start + 3 * HOUR + timedelta(minutes=7)

    lines = run_command("--until", until.isoformat())

    price_id = UsageReport.objects.get().price_id
    expected = LINE.format(customer=billing.customer_id, price=price_id, total="10.250000", start=billing.period.start, until=start + 3 * HOUR)
    assert lines[0] == expected + ", value: +10, status: sent"
    assert lines[1] == "1 report(s): 1 sent; +10 unit(s) sent to Stripe."
    assert billing.stripe_total() == Decimal(10)


def test_dry_run_prints_and_changes_nothing(billing, recorded_source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 4)

    lines = run_command("--dry-run", "--until", (billing.hour0 + 2 * HOUR).isoformat())

    assert lines[0].endswith("value: +4, status: dry-run")
    assert lines[1].startswith("Dry run, nothing written or sent: 1 report(s)")
    assert not UsageReport.objects.exists() and billing.stripe_events() == []


def test_until_without_offset_is_utc_and_garbage_is_refused(billing, recorded_source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 4)
    naive = (billing.hour0 + 2 * HOUR).replace(tzinfo=None).isoformat()
    run_command("--until", naive)
    assert UsageReport.objects.get().usage_until == billing.hour0 + 2 * HOUR

    with pytest.raises(CommandError, match="--until 'yesterday' is not a date and time"):
        run_command("--until", "yesterday")


def test_one_customer_only(billing, recorded_source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 4)
    lines = run_command("--customer", "cus_SomebodyElse0000", "--until", (billing.hour0 + 2 * HOUR).isoformat())
    assert lines == ["0 report(s): nothing to report; +0 unit(s) sent to Stripe."]
    run_command("--customer", billing.customer_id, "--until", (billing.hour0 + 2 * HOUR).isoformat())
    assert billing.stripe_total() == Decimal(4)


def test_a_failed_report_makes_the_command_fail_after_reporting_the_rest(billing, recorded_source):
    billing.source.failing_meters["m1"] = "connection refused"
    out = StringIO()
    with pytest.raises(CommandError, match="1 report\\(s\\) did not reach Stripe"):
        call_command("report_usage", "--until", (billing.hour0 + 2 * HOUR).isoformat(), stdout=out)
    assert "status: failed, error: usage source recorded: connection refused" in out.getvalue()


# --- the admin action ---------------------------------------------------------


def changelist(model):
    return reverse(f"admin:djstripe_{model}_changelist")


def staff_user(django_user_model, *, may_report: bool):
    user = django_user_model.objects.create_user("operator", password="pw-long-enough-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_customer", "view_subscription"]))
    if may_report:
        user.user_permissions.add(Permission.objects.get(codename="report_usage_now"))
    return user


def action_post(pk, **extra):
    return {"action": "report_usage_now", helpers.ACTION_CHECKBOX_NAME: [pk], **extra}


@pytest.mark.parametrize("model", ["customer", "subscription"])
def test_admin_action_asks_for_confirmation_then_reports(client, django_user_model, billing, recorded_source, model):
    client.force_login(staff_user(django_user_model, may_report=True))
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 6)
    obj = (Customer if model == "customer" else Subscription).objects.get()

    confirm = client.post(changelist(model), action_post(obj.pk))

    assert confirm.status_code == 200
    assert "Yes, report usage now" in confirm.content.decode() and obj.id in confirm.content.decode()
    assert billing.stripe_events() == []  # nothing happens before confirming

    done = client.post(changelist(model), action_post(obj.pk, post="yes"), follow=True)

    [message] = done.context["messages"]
    assert message.level_tag == "success" and ": sent +6 units to Stripe (usage up to " in str(message)
    assert UsageReport.objects.get().trigger == "admin"
    assert billing.stripe_total() == Decimal(6)


def test_admin_action_needs_the_dedicated_permission(client, django_user_model, billing, recorded_source):
    client.force_login(staff_user(django_user_model, may_report=False))
    customer = Customer.objects.get()

    page = client.get(changelist("customer"))
    assert page.status_code == 200
    assert "report_usage_now" not in page.content.decode()

    response = client.post(changelist("customer"), action_post(customer.pk, post="yes"), follow=True)
    assert not UsageReport.objects.exists() and billing.stripe_events() == []
    assert "No action selected." in [str(m) for m in response.context["messages"]]


def test_admin_action_shows_failures(admin_client, billing, recorded_source):
    billing.source.failing_meters["m1"] = "OpenMeter answered 503"
    customer = Customer.objects.get()

    response = admin_client.post(changelist("customer"), action_post(customer.pk, post="yes"), follow=True)

    [message] = response.context["messages"]
    assert message.level_tag == "error"
    assert str(message).startswith(f"Customer {customer.id}, price ") and ": failed, nothing sent: " in str(message)
    assert "OpenMeter answered 503" in str(message)


def test_report_now_on_a_period_awaiting_stripes_answer_warns_and_says_until_when(
    client, django_user_model, billing, recorded_source, settings
):
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1, "PENDING_LEASE_SECONDS": 300}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 6)
    billing.emulator.set_faults(rate_500=1.0, paths=["/v1/billing/meter_events"])
    billing.run(as_of=billing.hour0 + 2 * HOUR)  # the answer was a 500: the report is in doubt, its lease running
    billing.emulator.set_faults(rate_500=0.0)
    pending = UsageReport.objects.get(status="pending")
    client.force_login(staff_user(django_user_model, may_report=True))

    done = client.post(changelist("customer"), action_post(Customer.objects.get().pk, post="yes"), follow=True)

    messages = list(done.context["messages"])
    assert [m.level_tag for m in messages] == ["warning"]
    resend_at = (pending.updated + timedelta(seconds=300)).strftime("%H:%M")
    assert f"report {pending.identifier} (6 units) is awaiting Stripe's answer" in str(messages[0])
    assert f"resent with the same identifier from {resend_at} UTC" in str(messages[0])
    assert billing.stripe_total() == 0


def test_shards_without_a_running_cluster_say_so_and_take_no_other_option(billing):
    with pytest.raises(CommandError, match="--shards reports every customer as of now"):
        call_command("report_usage", "--shards", "2", "--customer", billing.customer_id, stdout=StringIO())
    out = StringIO()
    with pytest.raises(CommandError, match=r"only 0 of 2 shard\(s\) finished within 1 s: is a `manage.py qcluster` running"):
        call_command("report_usage", "--shards", "2", "--wait", "1", stdout=out)
    assert "0 of 2 shard(s) finished" in out.getvalue()
    assert not UsageReport.objects.exists()  # queued for a worker, nothing reported here
