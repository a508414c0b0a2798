"""The audit's CSV export and "Retry failed", reconciliation in the admin, the overview."""

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule, Task
from djstripe.models import Customer

from billing import stripe_api
from billing.models import PeriodReconciliation, UsageReport
from billing.services.schedules import (
    SCHEDULE_FUNC,
    SCHEDULE_NAME,
    ensure_report_schedule,
)
from tests.admin_helpers import source, staff  # noqa: F401 (source: a fixture)
from tests.factories import PERIOD_START, make_meter, make_report

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
AUDIT = reverse("admin:billing_usagereport_changelist")
EXPORT = reverse("admin:billing_usagereport_export")
OVERVIEW = reverse("admin:billing_overview")
RECONCILIATIONS = reverse("admin:billing_periodreconciliation_changelist")



def export(client, query=None):
    response = client.get(EXPORT, query or {})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


# --- CSV --------------------------------------------------------------------------


@pytest.fixture
def ledger():
    meter = make_meter()
    Customer.objects.create(id="cus_Alice0001", email="alice@example.com", livemode=False)
    sent = make_report(meter, customer_id="cus_Alice0001", status="sent", sent_at=timezone.now(),
                       usage_total=Decimal("10.123456"), value_sent=Decimal(10))
    failed = make_report(meter, customer_id="cus_Bob0002", subscription_item_id="si_Bob", identifier="bob-1",
                         status="failed", error="Stripe said no", value_sent=Decimal(-3),
                         period_start=PERIOD_START - timedelta(days=30), period_end=PERIOD_START, usage_until=PERIOD_START)
    return sent, failed


def test_csv_has_every_row_with_exact_amounts(admin_client, ledger):
    rows = export(admin_client)
    assert [r["identifier"] for r in rows] == ["bob-1", "test-identifier-1"]
    alice = rows[1]
    assert (alice["usage_total"], alice["value_sent"], alice["customer_email"]) == ("10.123456", "10.000000", "alice@example.com")
    assert rows[0]["customer_email"] == "" and rows[0]["value_sent"] == "-3.000000" and rows[0]["error"] == "Stripe said no"


@pytest.mark.parametrize(
    ("query", "identifiers"),
    [({"status__exact": "failed"}, ["bob-1"]), ({"q": "alice@example"}, ["test-identifier-1"]), ({"customer": "cus_Bob0002"}, ["bob-1"])],
)
def test_csv_respects_the_lists_filters_and_search(admin_client, ledger, query, identifiers):
    assert [r["identifier"] for r in export(admin_client, query)] == identifiers


def test_the_audit_links_its_export_with_the_current_filters(admin_client, ledger):
    html = admin_client.get(AUDIT, {"status__exact": "failed"}).content.decode()
    assert f'href="{EXPORT}?status__exact=failed"' in html
    assert 'data-status="failed"' in html and "✗</span> Failed" in html  # a badge with text, not colour alone


def test_csv_needs_the_view_permission(client, django_user_model, ledger):
    client.force_login(django_user_model.objects.create_user("clerk", password="pw-12345-long", is_staff=True))
    assert client.get(EXPORT).status_code == 403


# --- Retry failed -------------------------------------------------------------------


def retry(client, reports):
    return client.post(
        AUDIT, {"action": "retry_failed", helpers.ACTION_CHECKBOX_NAME: [r.pk for r in reports]}, follow=True
    )


def failed_run(billing):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 8)
    billing.source.failing_meters["m1"] = "connection refused"
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    del billing.source.failing_meters["m1"]
    return UsageReport.objects.get(status="failed")


def test_retry_failed_reports_through_the_engine(admin_client, billing, source):
    failed = failed_run(billing)

    response = retry(admin_client, [failed])

    [sent_message] = response.context["messages"]
    assert sent_message.level_tag == "success"
    assert str(sent_message).startswith(f"Customer {billing.customer_id}, price price_")
    assert ": sent +8 units to Stripe (usage up to " in str(sent_message)
    assert billing.stripe_total() == Decimal(8)
    new = UsageReport.objects.get(status="sent")
    assert (new.trigger, new.sequence, new.value_sent) == ("admin", 2, Decimal(8))
    failed.refresh_from_db()
    assert failed.status == "failed"  # the ledger keeps what happened

    again = retry(admin_client, [failed])  # exactly once: nothing new to send
    [nothing_new] = again.context["messages"]
    assert nothing_new.level_tag == "info"
    assert "nothing new to send: Stripe has this period's usage up to" in str(nothing_new)
    assert billing.stripe_total() == Decimal(8)


def test_retry_leaves_rows_that_did_not_fail(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 4)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    sent = UsageReport.objects.get()

    response = retry(admin_client, [sent])

    assert [str(m) for m in response.context["messages"]] == [
        "1 selected report(s) had not failed and were left alone.",
        "No failed report selected: nothing retried.",
    ]
    assert UsageReport.objects.count() == 1


def test_retry_needs_the_report_permission(client, django_user_model, billing, source):
    failed = failed_run(billing)
    client.force_login(staff(django_user_model, may_report=False))

    assert "retry_failed" not in client.get(AUDIT).content.decode()
    response = retry(client, [failed])  # the audit has no action for them at all: ignored
    assert response.status_code == 200 and not [str(m) for m in response.context["messages"]]
    assert billing.stripe_events() == [] and UsageReport.objects.count() == 1

    client.force_login(staff(django_user_model, "reporter", may_report=True))
    retry(client, [failed])
    assert billing.stripe_total() == Decimal(8)


# --- Reconciliation ---------------------------------------------------------------


@pytest.fixture
def drifted(billing, source):
    """Ten units reported, settled, then three more in Stripe from outside Epsilon."""
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    UsageReport.objects.update(updated=timezone.now() - timedelta(hours=1))  # settled
    stripe_api.get_client().v1.billing.meter_events.create({
        "event_name": "epsilon_execution_duration",
        "payload": {"stripe_customer_id": billing.customer_id, "value": "3"},
        "timestamp": int((billing.hour0 + HOUR).timestamp()),
    })
    return billing


def reconcile_post(client, url, pks, **extra):
    return client.post(url, {"action": "reconcile_with_stripe", helpers.ACTION_CHECKBOX_NAME: pks, **extra}, follow=True)


def test_reconcile_customers_confirms_then_finds_drift_then_corrects_it(admin_client, drifted):
    customer = Customer.objects.get()
    customers = reverse("admin:djstripe_customer_changelist")

    confirm = admin_client.post(customers, {"action": "reconcile_with_stripe", helpers.ACTION_CHECKBOX_NAME: [customer.pk]})
    assert "Yes, reconcile" in confirm.content.decode() and not PeriodReconciliation.objects.exists()

    found = reconcile_post(admin_client, customers, [customer.pk], post="yes")
    messages = [str(m) for m in found.context["messages"]]
    assert messages[0].startswith("1 period(s) checked: 1 drift.")
    assert "(drift +3)" in messages[1]
    assert PeriodReconciliation.objects.get().status == "drift" and drifted.stripe_total() == Decimal(13)

    row = PeriodReconciliation.objects.get()
    fixed = reconcile_post(admin_client, RECONCILIATIONS, [row.pk], post="yes", correct="yes")
    assert [str(m) for m in fixed.context["messages"]] == ["1 period(s) checked: 1 corrected."]
    assert drifted.stripe_total() == Decimal(10)


def test_reconciliation_list_filters_searches_and_links(admin_client, drifted):
    reconcile_post(admin_client, reverse("admin:djstripe_customer_changelist"), [Customer.objects.get().pk], post="yes")

    drift = admin_client.get(RECONCILIATIONS, {"status__exact": "drift"})
    assert drift.context["cl"].result_count == 1
    assert admin_client.get(RECONCILIATIONS, {"status__exact": "ok"}).context["cl"].result_count == 0
    assert admin_client.get(RECONCILIATIONS, {"q": drifted.customer_id}).context["cl"].result_count == 1
    assert admin_client.get(RECONCILIATIONS, {"q": "cus_Nobody"}).context["cl"].result_count == 0
    html = drift.content.decode()
    assert f'href="https://dashboard.stripe.com/test/customers/{drifted.customer_id}"' in html
    assert reverse("admin:billing_periodreconciliation_add") not in html


def test_reconcile_needs_the_report_permission(client, django_user_model, drifted):
    client.force_login(staff(django_user_model, may_report=False))
    customers = reverse("admin:djstripe_customer_changelist")
    response = reconcile_post(client, customers, [Customer.objects.get().pk], post="yes")
    assert "No action selected." in [str(m) for m in response.context["messages"]]
    assert not PeriodReconciliation.objects.exists()


# --- The overview ---------------------------------------------------------------------


def test_overview_counts_reports_per_hour_failures_by_reason_drift_and_the_schedule(admin_client):
    meter = make_meter()
    now = timezone.now()
    rows = [("sent", ""), ("sent", ""), ("failed", "Stripe 400: too old"), ("failed", "Stripe 400: too old"), ("failed", "timeout")]
    for n, (status, error) in enumerate(rows, start=1):
        report = make_report(meter, sequence=n, identifier=f"r{n}", status=status, error=error,
                             sent_at=now if status == "sent" else None, customer_id=f"cus_{n}")
        UsageReport.objects.filter(pk=report.pk).update(created=now - (HOUR if n <= 3 else 5 * HOUR))
    old = make_report(meter, sequence=9, identifier="old", status="failed", error="ancient", customer_id="cus_old")
    UsageReport.objects.filter(pk=old.pk).update(created=now - timedelta(days=3))
    PeriodReconciliation.objects.create(
        customer_id="cus_Drift", meter=meter, period_start=PERIOD_START, period_end=PERIOD_START + HOUR,
        usage_until=PERIOD_START + HOUR, ledger_units=5, stripe_units=7, drift=2, status="drift",
    )
    ensure_report_schedule()
    Task.objects.create(id="t1", name="run", func=SCHEDULE_FUNC, group=SCHEDULE_NAME, started=now - HOUR,
                        stopped=now - HOUR, success=False, result="1 report(s): 1 failed")

    response = admin_client.get(OVERVIEW)
    html = response.content.decode()
    overview = response.context["overview"]

    assert response.status_code == 200
    assert overview.status_totals == {"pending": 0, "sent": 2, "failed": 3, "skipped": 0, "carried": 0, "rejected": 0, "late": 0}
    by_hour = {h.hour: h.counts for h in overview.hours if h.total}
    assert sorted(by_hour.values(), key=lambda c: c["sent"]) == [
        {"pending": 0, "sent": 0, "failed": 2, "skipped": 0, "carried": 0, "rejected": 0, "late": 0},
        {"pending": 0, "sent": 2, "failed": 1, "skipped": 0, "carried": 0, "rejected": 0, "late": 0},
    ]
    assert len(overview.hours) == 48
    assert [(g.error, g.reports) for g in overview.failures] == [("Stripe 400: too old", 2), ("timeout", 1)]
    assert overview.open_problems == {"failed": 4, "pending": 0, "undecided": 0}  # latest rows of their periods, at any age
    assert [r.customer_id for r in overview.drift] == ["cus_Drift"]
    # Stacked: one bar per status of each hour, as tall as its count.
    assert sorted(re.findall(r'data-status="(\w+)" data-count="(\d+)"', html)) == [("failed", "1"), ("failed", "2"), ("sent", "2")]
    assert f'href="{AUDIT}?status__exact=failed"' in html
    assert "1 report(s): 1 failed" in html
    next_run = Schedule.objects.get().next_run
    assert f"{next_run:%Y-%m-%d %H:%M} UTC" in html


def test_overview_is_linked_from_the_index_and_guarded(admin_client, client, django_user_model):
    assert f'href="{OVERVIEW}"' in admin_client.get(reverse("admin:index")).content.decode()
    client.force_login(django_user_model.objects.create_user("clerk", password="pw-12345-long", is_staff=True))
    assert client.get(OVERVIEW).status_code == 403


def test_overview_says_when_there_is_no_schedule(admin_client):
    html = admin_client.get(OVERVIEW).content.decode()
    assert "No reporting schedule" in html and "No report failed in the last 48 hours" in html
