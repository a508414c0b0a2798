"""An operator's round trip in a real browser: customer, report now, audit, overview."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from djstripe.models import Customer

from billing.models import UsageReport
from billing.services.schedules import ensure_report_schedule

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
HOUR = timedelta(hours=1)


def test_customer_page_report_now_audit_and_overview(admin_page, live_server, billing, recorded_source, screenshot):
    page = admin_page
    ensure_report_schedule()  # due within the hour: the panel names the next run, no warning
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 30)
    billing.source.add(billing.customer_id, billing.hour0 + 26 * HOUR, "12.5")
    customer = Customer.objects.get()

    # The customer list: usage this period, batched, with the estimate.
    page.goto(f"{live_server.url}/admin/djstripe/customer/")
    row = page.locator("#result_list tbody tr").first
    row.get_by_text("42 units").wait_for()
    assert "+42 not at Stripe yet" in row.inner_text() and "$4.20" in row.inner_text()
    page.click(f"a[href$='/admin/djstripe/customer/{customer.pk}/change/']")

    # The customer page: figures and the chart of the current period, one bar per day.
    panel = page.locator("#epsilon-usage")
    panel.wait_for()
    assert panel.locator("[data-figure=used] dd").inner_text().startswith("42 units")
    # Stripe's preview bills what Stripe has (nothing yet); the estimate of all usage so far is beside it.
    estimate = panel.locator("[data-figure=estimate] dd").inner_text()
    assert estimate.startswith("$0.00") and "$4.20 for all usage so far at $0.10 per unit" in estimate
    chart = panel.locator("svg.epsilon-usage-chart")
    bars = chart.locator("rect.usage-bar")
    days = int(chart.get_attribute("data-bars"))
    # Subscribed ten days ago at 13:45: ten or eleven days begun, up to the last whole hour.
    elapsed = billing.period.usage_until(datetime.now(UTC)) - billing.period.start
    assert days == bars.count() == -(-elapsed // timedelta(days=1))
    assert [bars.nth(i).get_attribute("data-value") for i in range(3)] == ["30", "12.5", "0"]
    first, second = (float(bars.nth(i).get_attribute("height")) for i in range(2))
    assert first > second > 0 and first == pytest.approx(second * 30 / 12.5)
    assert chart.locator("title").first.text_content() == "Current period: usage per day"

    # Report usage now, confirmed, and back on the customer page with the result.
    page.click("#report-usage-now")
    page.get_by_role("button", name="Yes, report usage now").click()
    page.locator(".messagelist .success").wait_for()
    sent = page.locator(".messagelist .success").text_content().strip()
    assert sent.startswith(f"Customer {billing.customer_id}, price price_") and ": sent +42 units to Stripe (usage up to " in sent
    page.goto(page.url + "?stripe=refresh")  # Stripe's figure was read (and cached) before the report
    assert panel.locator("[data-figure=at-stripe] dd").inner_text().startswith("42 units")
    assert panel.locator("[data-figure=last-report] [data-status=sent]").is_visible()
    assert panel.locator("[data-warning=schedule]").count() == 0
    assert "next scheduled report: " in panel.locator("[data-figure=unsent] dd").inner_text()
    screenshot("admin-customer", locator=panel)  # the README's picture: the usage panel, reported
    screenshot("admin-customer-reported")

    # The audit: the new row, with its badge, and the CSV link keeping the filter.
    page.click(f"a[href='/admin/billing/usagereport/?customer={billing.customer_id}']")
    rows = page.locator("#result_list tbody tr")
    rows.first.wait_for()
    assert rows.count() == UsageReport.objects.count() == 1
    assert rows.first.locator(".epsilon-badge").inner_text().strip() == "✓ Sent"
    assert page.locator("#export-csv").get_attribute("href").endswith(f"?customer={billing.customer_id}")
    screenshot("admin-audit")

    # The overview: this hour's sent report drawn as a bar.
    page.click("text=Billing overview")
    page.locator("#reports-per-hour svg").wait_for()
    sent_bars = page.locator("rect.hour-bar[data-status=sent]")
    assert sent_bars.count() == 1 and sent_bars.first.get_attribute("data-count") == "1"
    assert page.locator("[data-status-total=sent]").inner_text() == "1"
    assert "No report failed in the last 48 hours" in page.locator("#failures").inner_text()
    screenshot("admin-overview")


def test_a_failing_usage_source_is_shown_to_the_operator(admin_page, live_server, billing, recorded_source, screenshot):
    page = admin_page
    billing.source.failing_meters["m1"] = "OpenMeter answered 503"
    customer = Customer.objects.get()

    page.goto(f"{live_server.url}/admin/djstripe/customer/{customer.pk}/change/")
    alert = page.locator("#epsilon-usage [data-error=usage]")
    alert.wait_for()
    assert re.search("OpenMeter answered 503", alert.inner_text())
    assert alert.get_attribute("role") == "alert"
    assert page.locator("svg.epsilon-usage-chart").count() == 0
    screenshot("admin-customer-source-error")


def test_an_operator_settles_a_report_in_doubt_and_reads_the_decision(
    admin_page, live_server, billing, recorded_source, settings, screenshot
):
    """The audit's "Settle reports in doubt": the page says how old each report is
    against Stripe's dedupe window; the message says what happened; the decision stays."""
    page = admin_page
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1, "PENDING_LEASE_SECONDS": 0}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.emulator.set_faults(rate_lost=1.0, paths=["/v1/billing/meter_events"])  # landed, answer lost
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    billing.emulator.set_faults(rate_lost=0.0)
    report = UsageReport.objects.get(status="pending")

    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/billing/usagereport/?status__exact=pending")
    page.check(f"input[name=_selected_action][value='{report.pk}']")
    page.select_option("select[name=action]", "settle_in_doubt")
    page.click("button[name=index]")

    row = page.locator("table.epsilon-in-doubt tbody tr")
    row.wait_for()
    assert report.identifier in row.inner_text() and "within: a resend is deduplicated" in row.inner_text()
    screenshot("admin-settle-in-doubt")
    page.check("input[name=way][value=cancel]")
    page.fill("#id_reason", "the answer was lost")
    page.click("input[type=submit][value='Settle them']")

    message = page.locator("ul.messagelist li").first
    message.wait_for()
    text = message.inner_text()
    assert text.startswith(f"Report {report.identifier}: Cancel it at Stripe (meter event adjustment) and report again: now failed.")
    assert "Stripe cancelled the event; reported again" in text

    page.goto(f"{live_server.url}/admin/billing/usagereport/{report.pk}/change/")
    decisions = page.locator(".inline-group").filter(has_text="Decisions on this report")
    decisions.wait_for()
    assert "ops" in decisions.inner_text() and "the answer was lost" in decisions.inner_text()
    assert billing.stripe_total() == 7
