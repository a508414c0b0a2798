"""
Honest state in the admin: a schedule nothing runs is a warning naming the cause;
"Report usage now" says per item what happened, at the right level; a failed report
a later one settled is shown resolved and is not counted as an open problem.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from djstripe.models import Customer

from billing.models import PeriodReconciliation, UsageReport
from billing.services.schedules import ensure_report_schedule
from tests.admin_helpers import add_customer, source  # noqa: F401 (source: a fixture)
from tests.factories import make_meter, make_report

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
OVERVIEW = reverse("admin:billing_overview")



def schedule_due(minutes_ago: int):
    schedule, _ = ensure_report_schedule()
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - timedelta(minutes=minutes_ago))


def test_an_overdue_schedule_is_a_warning_naming_the_missing_qcluster(admin_client, billing, source):
    schedule_due(minutes_ago=30)  # and no task ever ran

    overview = admin_client.get(OVERVIEW).content.decode()
    panel = admin_client.get(reverse("admin:djstripe_customer_change", args=[Customer.objects.get().pk])).content.decode()

    for html in (overview, panel):
        assert 'data-warning="schedule"' in html
        assert "Reporting is overdue" in html and "minutes late and it has never run" in html
        assert "Likely cause: no qcluster is running" in html
    assert 'data-status="overdue"' in overview


def test_a_schedule_that_runs_is_not_a_warning(admin_client, billing, source):
    schedule_due(minutes_ago=-20)  # due in 20 minutes
    for url in (OVERVIEW, reverse("admin:djstripe_customer_change", args=[Customer.objects.get().pk])):
        html = admin_client.get(url).content.decode()
        assert 'data-warning="schedule"' not in html and "Reporting is overdue" not in html


def report_now(client, customer_pk):
    return client.post(
        reverse("admin:djstripe_customer_changelist"),
        {"action": "report_usage_now", "_selected_action": [customer_pk], "post": "yes"},
        follow=True,
    )


def test_report_now_says_per_item_what_happened_at_its_level(admin_client, billing, source):
    other = add_customer(billing, "bob@example.com")
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.source.add(other, timezone.now() - 3 * HOUR, 5)
    billing.run(as_of=timezone.now(), customer_ids=[other])  # Bob has nothing new afterwards

    response = admin_client.post(
        reverse("admin:djstripe_customer_changelist"),
        {"action": "report_usage_now", "_selected_action": list(Customer.objects.values_list("pk", flat=True)), "post": "yes"},
        follow=True,
    )

    messages = {m.level_tag: str(m) for m in response.context["messages"]}
    summary, *items = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert summary[0] == "success" and summary[1].startswith("2 items reported: ")
    assert "1 sent" in summary[1] and "1 with nothing new" in summary[1] and summary[1].endswith("; +7 units sent to Stripe.")
    assert sorted(level for level, _ in items) == ["info", "success"]
    assert messages["info"].startswith(f"Customer {other}, price ") and "nothing new to send" in messages["info"]
    assert billing.stripe_total() == Decimal(7)


def test_report_now_with_nothing_new_is_info_not_success(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 3)
    billing.run(as_of=timezone.now())

    [message] = report_now(admin_client, Customer.objects.get().pk).context["messages"]

    assert message.level_tag == "info" and "nothing new to send" in str(message)


def test_a_failed_report_a_later_one_settled_is_resolved_and_not_an_open_problem(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 8)
    billing.source.failing_meters["m1"] = "connection refused"
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    del billing.source.failing_meters["m1"]
    audit = reverse("admin:billing_usagereport_changelist")
    failed = UsageReport.objects.get(status="failed")

    before = admin_client.get(OVERVIEW).content.decode()
    assert 'data-count="1">1 period whose latest report failed' in before
    assert "connection refused" in before  # a failure by reason, open

    billing.run(as_of=billing.hour0 + 2 * HOUR)  # the period's next report gets through
    after = admin_client.get(OVERVIEW).content.decode()
    listing = admin_client.get(audit, {"status__exact": "failed"}).content.decode()

    assert 'data-count="0">0 periods whose latest report failed' in after
    assert 'data-resolved="1"' in after and "No report failed in the last 48 hours" in after
    assert 'data-status="failed"' in listing and 'data-status="resolved"' in listing
    assert [r.pk for r in admin_client.get(audit, {"resolution": "resolved"}).context["cl"].result_list] == [failed.pk]
    assert list(admin_client.get(audit, {"resolution": "open"}).context["cl"].result_list) == []
    assert billing.stripe_total() == Decimal(8)


def test_drift_has_a_sign_and_the_count_its_grammar(admin_client):
    meter = make_meter()
    report = make_report(meter, status="sent", sent_at=timezone.now(), value_sent=Decimal("1128"), usage_total=Decimal("1128"))
    PeriodReconciliation.objects.create(
        customer_id=report.customer_id, meter=meter, period_start=report.period_start, period_end=report.period_end,
        usage_until=report.usage_until, source_total=Decimal("1128"), ledger_units=Decimal("1128"),
        stripe_units=Decimal("1153"), drift=Decimal("25"), status="drift", checked_at=timezone.now(),
    )

    html = admin_client.get(OVERVIEW).content.decode()

    assert "1 period that disagrees with Stripe" in html
    assert "<td>+25</td>" in html and "<td>1,128</td>" in html and ".000000" not in html
