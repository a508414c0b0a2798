"""Customer and subscription pages: usage, what Stripe has, the estimate, charts, errors."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from djstripe.models import Customer, Subscription

from billing.admin import selectors as admin_selectors
from billing.services.periods import AlignedPeriod
from billing.services.schedules import ensure_report_schedule
from tests.admin_helpers import add_customer, source  # noqa: F401 (source: a fixture)

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)



def change_page(admin_client, model, obj):
    return admin_client.get(reverse(f"admin:djstripe_{model}_change", args=[obj.pk]))


def figure(html, name):
    """The text of one figure of the usage panel, tags stripped."""
    match = re.search(rf'data-figure="{name}">\s*<dt>.*?</dt>(.*?)</div>', html, re.DOTALL)
    assert match, f"no {name} figure"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def test_customer_page_shows_usage_stripe_total_estimate_and_next_run(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 40)
    billing.run(as_of=billing.hour0 + 3 * HOUR)
    billing.source.add(billing.customer_id, billing.hour0 + 5 * HOUR, "2.75")  # not reported yet
    schedule, _ = ensure_report_schedule()
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now().replace(year=2031, month=1, day=2, hour=3, minute=4))

    html = change_page(admin_client, "customer", Customer.objects.get()).content.decode()

    assert figure(html, "used").startswith("42 units 42.75 exactly")
    assert figure(html, "at-stripe").startswith("40 units Stripe's meter summary, read ")
    assert "ledger sent 40 units: in agreement" in figure(html, "at-stripe")
    assert figure(html, "unsent").startswith("2 units next scheduled report: 2031-01-02 03:04 UTC")
    # Stripe's preview bills what its meter holds (40); all usage so far at the price is 42.75 -> 42 units.
    assert figure(html, "estimate").startswith("$4.00 Stripe's preview, for the period to ")
    assert figure(html, "estimate").endswith("$4.20 for all usage so far at $0.10 per unit")
    assert figure(html, "last-report").startswith("✓ Sent #1")
    assert 'id="report-usage-now"' in html
    assert 'href="https://dashboard.stripe.com/test/customers/' + billing.customer_id + '"' in html


def test_chart_draws_one_bar_per_day_of_the_current_period(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 30)
    billing.source.add(billing.customer_id, billing.hour0 + 26 * HOUR, 15)  # the second day

    response = change_page(admin_client, "subscription", Subscription.objects.get())
    html = response.content.decode()

    [usage] = response.context["epsilon_usages"]
    [chart] = usage.charts  # the subscription's first period: no previous one
    elapsed = usage.usage_until - billing.period.start
    assert chart.bucket == timedelta(days=1)
    assert len(chart.bars) == -(-elapsed // timedelta(days=1))
    assert [bar.value for bar in chart.bars[:3]] == [30, 15, 0]
    bars = re.findall(r'<rect class="usage-bar"[^>]*height="([\d.]+)" data-value="([\d.]+)"', html)
    assert len(bars) == len(chart.bars)
    # The tallest bar fills the plot (a round axis maximum of 50 for 30): 30/50 and 15/50 of it.
    (h1, v1), (h2, v2) = bars[0], bars[1]
    assert (v1, v2) == ("30", "15") and float(h1) == pytest.approx(2 * float(h2))
    assert "<title id=" in html and "Current period: usage per day" in html
    assert "No previous period" in html


def test_the_previous_period_is_charted_from_the_ledger(admin_client, billing, source):
    from tests.factories import make_report  # the ledger's row of an earlier period

    previous = AlignedPeriod.of(billing.period.billing_start - timedelta(days=30), billing.period.billing_start, "HOUR")
    billing.source.add(billing.customer_id, previous.start + 2 * HOUR, 7)
    make_report(
        admin_selectors.selectors.current_targets()[0].meter, customer_id=billing.customer_id,
        subscription_id=billing.subscription_id, subscription_item_id=billing.item_id,
        period_start=previous.start, period_end=previous.end, usage_until=previous.end,
    )
    response = change_page(admin_client, "customer", Customer.objects.get())
    _, earlier = response.context["epsilon_usages"][0].charts
    assert earlier.title == "Previous period" and earlier.period.start == previous.start
    assert earlier.total == 7 and len(earlier.bars) == 30
    assert "Previous period: usage per day" in response.content.decode()


def test_a_failing_source_is_shown_not_hidden(admin_client, billing, source):
    billing.source.failing_meters["m1"] = "OpenMeter answered 503"

    detail = change_page(admin_client, "customer", Customer.objects.get()).content.decode()
    listing = admin_client.get(reverse("admin:djstripe_customer_changelist"))

    assert "Usage source error: usage source recorded: OpenMeter answered 503" in detail
    assert figure(detail, "used") == "unknown"
    assert "No chart: usage source recorded: OpenMeter answered 503" in detail
    assert "⚠ usage unknown" in listing.content.decode()
    assert [str(m) for m in listing.context["messages"]] == [
        "Usage this period is not shown: usage source recorded: OpenMeter answered 503"
    ]


def test_a_failed_report_is_flagged_on_the_page_and_in_the_list(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 5)
    billing.source.failing_meters["m1"] = "connection refused"
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    del billing.source.failing_meters["m1"]

    detail = change_page(admin_client, "customer", Customer.objects.get()).content.decode()
    listing = admin_client.get(reverse("admin:djstripe_customer_changelist")).content.decode()

    assert "Failed: usage source recorded: connection refused" in detail
    assert figure(detail, "last-report").startswith("✗ Failed #1")
    assert 'data-status="failed"' in listing


def test_list_views_read_the_source_once_per_meter_for_the_whole_page(admin_client, billing, source):
    others = [add_customer(billing, f"c{i}@example.com") for i in range(3)]
    for n, customer_id in enumerate([billing.customer_id, *others], start=1):
        billing.source.add(customer_id, timezone.now() - 3 * HOUR, 10 * n)
    billing.source.queries.clear()

    response = admin_client.get(reverse("admin:djstripe_customer_changelist"))
    html = response.content.decode()

    assert billing.source.queries == [("m1", 4)]  # one call, four customers
    assert "<b>10 units</b> <small>+10 not at Stripe yet</small>" in html and "$1.00" in html
    assert "<b>40 units</b> <small>+40 not at Stripe yet</small>" in html and "$4.00" in html

    billing.source.queries.clear()
    admin_client.get(reverse("admin:djstripe_subscription_changelist"))
    assert billing.source.queries == [("m1", 4)]


def test_staff_without_the_permission_see_usage_but_no_report_button(client, django_user_model, billing, source):
    from tests.admin_helpers import staff

    client.force_login(staff(django_user_model, may_report=False))
    html = change_page(client, "customer", Customer.objects.get()).content.decode()
    assert 'data-figure="used"' in html and 'id="report-usage-now"' not in html
    url = reverse("admin:djstripe_customer_report_usage", args=[Customer.objects.get().pk])
    assert client.post(url, {"post": "yes"}).status_code == 403


def test_the_change_page_button_confirms_then_reports_and_comes_back(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 6)
    customer = Customer.objects.get()
    url = reverse("admin:djstripe_customer_report_usage", args=[customer.pk])

    confirm = admin_client.get(url)
    assert "Yes, report usage now" in confirm.content.decode() and billing.stripe_events() == []

    done = admin_client.post(url, {"post": "yes"}, follow=True)
    assert done.redirect_chain[-1][0] == reverse("admin:djstripe_customer_change", args=[customer.pk])
    [message] = done.context["messages"]
    assert message.level_tag == "success" and ": sent +6 units to Stripe" in str(message)
    assert billing.stripe_total() == Decimal(6)


def test_prices_and_products_link_to_the_stripe_dashboard(admin_client, billing):
    from djstripe.models import Price, Product

    price, product = Price.objects.get(), Product.objects.get()
    prices = admin_client.get(reverse("admin:djstripe_price_changelist")).content.decode()
    assert f'href="https://dashboard.stripe.com/test/prices/{price.id}"' in prices
    products = admin_client.get(reverse("admin:djstripe_product_change", args=[product.pk])).content.decode()
    assert f'href="https://dashboard.stripe.com/test/products/{product.id}"' in products


@pytest.mark.parametrize(
    ("cents", "currency", "expected"),
    [(Decimal(420), "usd", "$4.20"), (Decimal("0.5"), "usd", "$0.01"), (Decimal(123456), "eur", "1,234.56 EUR"), (None, "usd", "-")],
)
def test_money_is_exact_and_rounded_to_the_cent(cents, currency, expected):
    assert admin_selectors.money(cents, currency) == expected


def test_unit_prices_keep_their_precision():
    assert admin_selectors.unit_price(Decimal(10), "usd") == "$0.10"
    assert admin_selectors.unit_price(Decimal("0.5"), "usd") == "$0.005"
    assert admin_selectors.unit_price(None, "usd") == "tiered (see Stripe)"


def test_step_back_one_month_clamps_the_day():
    from datetime import UTC, datetime

    assert admin_selectors.step_back(datetime(2027, 3, 31, 13, tzinfo=UTC), "month", 1) == datetime(2027, 2, 28, 13, tzinfo=UTC)
    assert admin_selectors.step_back(datetime(2027, 1, 15, tzinfo=UTC), "month", 1) == datetime(2026, 12, 15, tzinfo=UTC)
    assert admin_selectors.step_back(datetime(2027, 1, 15, tzinfo=UTC), "week", 2) == datetime(2027, 1, 1, tzinfo=UTC)
