"""
What an operator reads in a 1400x900 window: the audit's value and status without
scrolling sideways, Stripe's own figure after drift, an overdue schedule, and the
warning of "Report usage now" on a period still awaiting Stripe's answer.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule
from djstripe.models import Customer

from billing import stripe_api
from billing.models import UsageReport
from billing.services.schedules import ensure_report_schedule
from tests.admin_helpers import add_customer
from tests.browser.conftest import VIEWPORT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
HOUR = timedelta(hours=1)


def within_viewport(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"]


def test_the_audit_reads_at_1400_px_without_scrolling_sideways(admin_page, live_server, billing, recorded_source, screenshot):
    page = admin_page
    other = add_customer(billing, "accounts-payable.department@a-long-company-name.example")
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 1128)
    billing.source.add(other, timezone.now() - 3 * HOUR, 7)
    billing.run(as_of=billing.hour0 + 3 * HOUR)
    billing.run(as_of=timezone.now())

    page.goto(f"{live_server.url}/admin/billing/usagereport/")
    page.locator("#result_list tbody tr").first.wait_for()

    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    for column in ("created_display", "customer_display", "period_display", "value_display", "status_display", "trigger"):
        assert within_viewport(page.locator(f"#result_list thead th.column-{column}")), column
    first = page.locator("#result_list tbody tr").filter(has_text="+1,128")
    assert within_viewport(first.locator("td.field-status_display .epsilon-badge"))
    assert within_viewport(first.locator("td.field-value_display"))
    period = first.locator("td.field-period_display .epsilon-period")
    assert period.bounding_box()["height"] < 25  # the period on one line
    screenshot("admin-audit-1400", full_page=False)

    page.goto(f"{live_server.url}/admin/djstripe/customer/")
    page.locator("#result_list tbody tr").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    for column in ("usage_this_period", "estimate_this_period", "report_state"):
        assert within_viewport(page.locator(f"#result_list thead th.column-{column}")), column
    screenshot("admin-customers-1400", full_page=False)


def test_the_customer_tile_shows_stripes_figure_after_drift(admin_page, live_server, billing, recorded_source, screenshot):
    page = admin_page
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 40)
    billing.run(as_of=billing.hour0 + 3 * HOUR)
    customer = Customer.objects.get()
    page.goto(f"{live_server.url}/admin/djstripe/customer/{customer.pk}/change/")
    tile = page.locator("#epsilon-usage [data-figure=at-stripe] dd")
    assert tile.inner_text().startswith("40 units")

    # 25 units reach Stripe from outside Epsilon: Stripe holds 65, the ledger sent 40.
    stripe_api.get_client().v1.billing.meter_events.create({
        "event_name": "epsilon_execution_duration",
        "payload": {"stripe_customer_id": billing.customer_id, "value": "25"},
        "timestamp": int((billing.hour0 + 2 * HOUR).timestamp()),
    })
    page.get_by_role("link", name="read again").click()
    tile = page.locator("#epsilon-usage [data-figure=at-stripe] dd")
    tile.wait_for()

    assert tile.inner_text().startswith("65 units")
    assert "ledger sent 40 units: drift +25 (Stripe − ledger)" in tile.inner_text()
    assert tile.locator("[data-status=drift]").is_visible() and within_viewport(tile)
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    assert billing.stripe_total() == 65
    screenshot("admin-customer-drift", full_page=False)


def test_an_overdue_schedule_is_a_warning_on_the_overview_and_the_panel(admin_page, live_server, billing, recorded_source, screenshot):
    page = admin_page
    schedule, _ = ensure_report_schedule()
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - timedelta(minutes=40))

    page.goto(f"{live_server.url}/admin/billing/usagereport/overview/")
    warning = page.locator("[data-warning=schedule]")
    warning.wait_for()
    assert "Reporting is overdue" in warning.inner_text() and "no qcluster is running" in warning.inner_text()
    assert warning.is_visible() and within_viewport(warning)
    screenshot("admin-overview-overdue", full_page=False)

    page.goto(f"{live_server.url}/admin/djstripe/customer/{Customer.objects.get().pk}/change/")
    assert "no qcluster is running" in page.locator("#epsilon-usage [data-warning=schedule]").inner_text()


def test_report_now_on_a_report_awaiting_stripe_is_a_warning(admin_page, live_server, billing, recorded_source, settings, screenshot):
    page = admin_page
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1, "PENDING_LEASE_SECONDS": 300}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 6)
    billing.emulator.set_faults(rate_500=1.0, paths=["/v1/billing/meter_events"])
    billing.run(as_of=billing.hour0 + 2 * HOUR)  # Stripe answered 500: the report is in doubt
    billing.emulator.set_faults(rate_500=0.0)
    pending = UsageReport.objects.get(status="pending")

    page.goto(f"{live_server.url}/admin/djstripe/customer/{Customer.objects.get().pk}/change/")
    page.click("#report-usage-now")
    page.get_by_role("button", name="Yes, report usage now").click()
    warning = page.locator(".messagelist .warning")
    warning.wait_for()

    assert page.locator(".messagelist .success").count() == 0
    assert f"report {pending.identifier} (6 units) is awaiting Stripe's answer" in warning.inner_text()
    assert "resent with the same identifier from" in warning.inner_text()
    screenshot("admin-report-now-in-flight", full_page=False)
