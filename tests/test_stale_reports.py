"""
Reports in doubt (a send interrupted, no run sending them) settled on purpose, each
way: resent inside Stripe's dedupe window, cancelled at Stripe and reported again,
decided by Stripe's meter summary, or marked by an operator with a reason. Judged by
what Stripe's meter holds for the customer afterwards, and by the audit row each
decision leaves.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.errors import ReportNotResolvable
from billing.models import ReportDecision, UsageReport
from billing.services import stale_reports

pytestmark = pytest.mark.django_db(transaction=True)
HOUR = timedelta(hours=1)
FAULTS = [("rate_lost", True), ("rate_500", False)]
FAULT_IDS = ["landed", "never-landed"]


def in_doubt(billing, settings, fault, *, hours_old=0) -> UsageReport:
    """A report of 7 units whose send failed with `fault`, left pending, no run holding it."""
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1, "PENDING_LEASE_SECONDS": 0}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.emulator.set_faults(**{fault: 1.0}, paths=["/v1/billing/meter_events"])
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    billing.emulator.set_faults(**{fault: 0.0})
    report = UsageReport.objects.get(status="pending")
    if hours_old:
        then = datetime.now(UTC) - timedelta(hours=hours_old)
        UsageReport.objects.filter(pk=report.pk).update(created=then, updated=then)
        report.refresh_from_db()
    return report


@pytest.mark.parametrize(("fault", "landed"), FAULTS, ids=FAULT_IDS)
def test_a_report_in_doubt_resent_with_its_identifier_is_billed_once(billing, settings, fault, landed):
    report = in_doubt(billing, settings, fault)
    assert billing.stripe_total() == (7 if landed else 0)

    decision = stale_reports.resolve(report, action="auto", decided_by="ops@example.com", client=billing.emulator.client())

    report.refresh_from_db()
    assert (report.status, billing.stripe_total()) == ("sent", Decimal(7))
    assert (decision.action, decision.decided_by, decision.status_before, decision.status_after) == (
        "resend", "ops@example.com", "pending", "sent"
    )
    assert "resent with the same identifier" in decision.outcome


@pytest.mark.parametrize(("fault", "landed"), FAULTS, ids=FAULT_IDS)
def test_a_report_in_doubt_cancelled_at_stripe_is_reported_again_once(billing, settings, fault, landed):
    report = in_doubt(billing, settings, fault)

    decision = stale_reports.resolve(
        report, action="cancel", decided_by="ops@example.com", client=billing.emulator.client(), source=billing.source
    )

    report.refresh_from_db()
    assert report.status == "failed" and "cancelled by ops@example.com" in report.error
    again = UsageReport.objects.get(status="sent")
    assert again.identifier != report.identifier and again.value_sent == 7
    assert billing.stripe_total() == Decimal(7)  # the landed event cancelled, the usage sent once
    expected = "Stripe cancelled the event" if landed else "Stripe holds no event with this identifier"
    assert expected in decision.outcome and again.identifier in decision.outcome


@pytest.mark.parametrize(("fault", "landed"), FAULTS, ids=FAULT_IDS)
def test_past_the_dedupe_window_a_resend_is_refused_and_the_meter_summary_decides(billing, settings, fault, landed):
    report = in_doubt(billing, settings, fault, hours_old=25)
    client = billing.emulator.client()
    for way in ("resend", "cancel"):
        with pytest.raises(ReportNotResolvable, match="no longer deduplicates"):
            stale_reports.resolve(report, action=way, decided_by="ops", client=client)

    decision = stale_reports.resolve(report, action="auto", decided_by="ops", client=client)

    assert decision.action == "meter_summary"
    assert decision.status_after == ("sent" if landed else "failed"), decision.outcome
    billing.run(as_of=billing.hour0 + 2 * HOUR)  # a failed row's usage goes out under a new identifier
    assert billing.stripe_total() == Decimal(7)


def test_what_the_meter_summary_cannot_decide_an_operator_marks_with_a_reason(billing, settings, admin_client):
    report = in_doubt(billing, settings, "rate_lost", hours_old=25)
    client = billing.emulator.client()
    # Someone else's event in the period: Stripe holds 7 + 3, neither "with" nor "without" this row.
    client.v1.billing.meter_events.create({
        "event_name": report.meter.event_name, "identifier": "someone-else",
        "payload": {"stripe_customer_id": billing.customer_id, "value": "3"},
        "timestamp": int(report.event_timestamp.timestamp()),
    })
    undecided = stale_reports.resolve(report, action="meter_summary", decided_by="ops", client=client)
    assert undecided.status_after == "pending" and "holds 10" in undecided.outcome
    overview = admin_client.get("/admin/billing/usagereport/overview/").content.decode()
    assert "1 report in doubt past Stripe's 24-hour dedupe window" in overview  # shown to an operator

    UsageReport.objects.filter(pk=report.pk).update(updated=datetime.now(UTC) - HOUR)
    with pytest.raises(ReportNotResolvable, match="needs a reason"):
        stale_reports.resolve(report, action="mark_sent", decided_by="ops", client=client)
    decision = stale_reports.resolve(
        report, action="mark_sent", decided_by="ops", reason="its event is in the dashboard", client=client
    )

    report.refresh_from_db()
    assert report.status == "sent" and "marked sent by ops: its event is in the dashboard" in report.error
    assert list(ReportDecision.objects.filter(report=report).values_list("action", "status_after").order_by("id")) == [
        ("meter_summary", "pending"), ("mark_sent", "sent"),
    ]
    overview = admin_client.get("/admin/billing/usagereport/overview/").content.decode()
    assert "0 reports in doubt past Stripe's 24-hour dedupe window" in overview


def test_a_report_a_run_is_sending_or_that_is_settled_is_not_touched(billing, settings):
    report = in_doubt(billing, settings, "rate_500")
    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 300}  # its lease is still running
    with pytest.raises(ReportNotResolvable, match="being sent by a run"):
        stale_reports.resolve(report, action="resend", decided_by="ops", client=billing.emulator.client())
    UsageReport.objects.filter(pk=report.pk).update(status="failed")
    report.refresh_from_db()
    with pytest.raises(ReportNotResolvable, match="not in doubt"):
        stale_reports.resolve(report, action="resend", decided_by="ops", client=billing.emulator.client())
    assert not ReportDecision.objects.exists()


def test_the_command_lists_reports_in_doubt_and_settles_them(billing, settings):
    report = in_doubt(billing, settings, "rate_lost")
    out = StringIO()
    call_command("resolve_report", stdout=out)
    assert f"{report.identifier}: customer {billing.customer_id}, value 7, pending" in out.getvalue()
    assert "within Stripe's dedupe window" in out.getvalue() and "1 report(s) in doubt." in out.getvalue()

    with pytest.raises(CommandError, match="needs a reason|not settled"):
        call_command("resolve_report", report.identifier, "--action", "mark-failed", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="no usage report has the identifier nope"):
        call_command("resolve_report", "nope", stdout=StringIO())

    out = StringIO()
    call_command("resolve_report", "--all", "--by", "night-shift", stdout=out)
    assert f"{report.identifier}: resend -> sent" in out.getvalue()
    assert ReportDecision.objects.get().decided_by == "night-shift"
    assert billing.stripe_total() == Decimal(7)


# --- the admin action ------------------------------------------------------------------

AUDIT = "/admin/billing/usagereport/"


def settle_post(client, reports, **fields):
    from django.contrib.admin import helpers

    data = {"action": "settle_in_doubt", helpers.ACTION_CHECKBOX_NAME: [r.pk for r in reports], **fields}
    return client.post(AUDIT, data, follow=True)


def test_the_admin_action_needs_its_permission_and_records_who_decided(client, django_user_model, billing, settings):
    from django.contrib.auth.models import Permission

    from tests.admin_helpers import staff

    report = in_doubt(billing, settings, "rate_500")
    operator = staff(django_user_model, may_report=True)  # may report usage, not settle reports
    client.force_login(operator)
    assert "settle_in_doubt" not in client.get(AUDIT).content.decode()
    response = settle_post(client, [report], post="yes", way="resend")
    assert [str(m) for m in response.context["messages"]] == ["No action selected."]  # Django: not theirs
    report.refresh_from_db()
    assert report.status == "pending" and billing.stripe_total() == 0

    operator.user_permissions.add(Permission.objects.get(codename="resolve_usage_report"))
    client.force_login(django_user_model.objects.get(pk=operator.pk))
    page = settle_post(client, [report]).content.decode()
    assert report.identifier in page and "within: a resend is deduplicated" in page and "Settle them" in page

    response = settle_post(client, [report], post="yes", way="mark_failed", reason="")
    assert [str(m) for m in response.context["messages"]] == [
        f"Report {report.identifier}: not settled: marking a report sent or failed needs a reason: what you checked in Stripe."
    ]
    response = settle_post(client, [report], post="yes", way="auto")
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith(f"Report {report.identifier}: Resend with the same identifier (Stripe deduplicates it): now sent.")
    assert billing.stripe_total() == Decimal(7)
    assert ReportDecision.objects.get().decided_by == "operator"

    response = settle_post(client, [report], post="yes", way="auto")  # settled now: nothing in doubt
    assert [str(m) for m in response.context["messages"]] == [
        "No selected report is in doubt: only pending reports that no run is sending can be settled."
    ]
    change = client.get(f"{AUDIT}{report.pk}/change/").content.decode()
    assert "Decisions on this report" in change and "resent with the same identifier" in change


def test_a_report_of_a_period_whose_invoice_is_final_is_never_cancelled(billing, settings):
    # Landed in the grace period, answer lost, then the invoice finalized billing it:
    # cancelling would take it out of the meter but not off the invoice, and the
    # period's report again would bill it a second time on the next invoice.
    from billing.models import FinalizedInvoiceLine

    report = in_doubt(billing, settings, "rate_lost")
    FinalizedInvoiceLine.objects.create(
        invoice_id="in_final", customer_id=report.customer_id, subscription_item_id=report.subscription_item_id,
        period_start=report.billing_start, period_end=report.billing_end, quantity=7, finalized_at=report.billing_end,
    )
    with pytest.raises(ReportNotResolvable, match="invoice of .* period is finalized"):
        stale_reports.resolve(report, action="cancel", decided_by="ops", client=billing.emulator.client())
    decision = stale_reports.resolve(report, action="resend", decided_by="ops", client=billing.emulator.client())
    assert decision.status_after == "sent" and billing.stripe_total() == Decimal(7)
    report.refresh_from_db()
    assert report.unbilled == 0  # the invoice billed it
