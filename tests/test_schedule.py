"""The periodic report: one django-q2 schedule, created idempotently, running the same service."""

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from billing.models import UsageReport
from billing.services import usage_reporting
from billing.services.schedules import SCHEDULE_FUNC, SCHEDULE_NAME, ensure_report_schedule
from billing.tasks import ReportingFailed, report_usage_on_schedule

pytestmark = pytest.mark.django_db


def test_the_schedule_is_created_once_and_updated_after(settings):
    schedule, created = ensure_report_schedule()
    again, created_again = ensure_report_schedule(minutes=15)

    assert (created, created_again) == (True, False)
    assert again.pk == schedule.pk
    stored = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (stored.func, stored.schedule_type, stored.minutes, stored.repeats) == (SCHEDULE_FUNC, "I", 15, -1)


def test_duplicate_schedules_from_older_setups_collapse_to_one():
    for _ in range(3):  # django-q2 does not make names unique
        Schedule.objects.create(name=SCHEDULE_NAME, func=SCHEDULE_FUNC, schedule_type=Schedule.HOURLY)
    ensure_report_schedule()
    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1


def test_epsilon_setup_creates_the_schedule_with_the_configured_interval(stripe_emulated, settings):
    settings.EPSILON = {**settings.EPSILON, "REPORT_INTERVAL_MINUTES": 20}
    call_command("epsilon_setup", stdout=mock.Mock())
    call_command("epsilon_setup", stdout=mock.Mock())
    assert list(Schedule.objects.values_list("name", "minutes")) == [(SCHEDULE_NAME, 20)]


def test_the_scheduled_task_reports_with_the_schedule_trigger(billing):
    billing.source.add(billing.customer_id, billing.hour0 + timedelta(hours=1), 5)
    with mock.patch.object(usage_reporting, "get_usage_source", return_value=billing.source):
        summary = report_usage_on_schedule()
    assert summary == "1 report(s): 1 sent; +5 unit(s) sent to Stripe."
    assert UsageReport.objects.get().trigger == "schedule"
    assert billing.stripe_total() == Decimal(5)


def test_a_failing_scheduled_run_fails_its_task_with_the_reason(billing):
    billing.source.failing_meters["m1"] = "OpenMeter timed out"
    with mock.patch.object(usage_reporting, "get_usage_source", return_value=billing.source):
        with pytest.raises(ReportingFailed, match="OpenMeter timed out"):
            report_usage_on_schedule()


@pytest.mark.django_db
def test_the_schedule_fans_out_one_task_per_shard_when_configured(settings):
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    settings.EPSILON = {**settings.EPSILON, "REPORT_SHARDS": 3}
    said = report_usage_on_schedule()
    queued = [SignedPackage.loads(q.payload) for q in OrmQ.objects.all()]
    assert sorted(task["args"][:2] for task in queued) == [(0, 3), (1, 3), (2, 3)]
    assert {task["func"] for task in queued} == {"billing.tasks.report_usage_shard"}
    assert len({task["group"] for task in queued}) == 1 and queued[0]["group"] in said
