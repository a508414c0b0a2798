"""
The current period at a glance: one chart renderer for every chart (usage, reports per
hour), each naming its unit; the current period's chart spans only the days begun; a
table below it lists each window with usage and the report that sent it.
"""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from djstripe.models import Customer

from billing.admin.charts import Segment, bar_chart, nice_ceiling
from tests.admin_helpers import source  # noqa: F401 (source: a fixture)

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)



def customer_page(admin_client):
    return admin_client.get(reverse("admin:djstripe_customer_change", args=[Customer.objects.get().pk]))


def test_the_window_table_lists_windows_with_usage_and_the_report_that_sent_them(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 30)
    billing.source.add(billing.customer_id, billing.hour0 + 2 * HOUR + timedelta(minutes=5), "12.5")
    billing.run(as_of=billing.hour0 + 3 * HOUR)  # both windows reported by #1
    billing.source.add(billing.customer_id, billing.hour0 + 26 * HOUR, 4)  # not reported yet

    html = customer_page(admin_client).content.decode()

    table = re.search(r'data-table="windows".*?</details>', html, re.DOTALL).group(0)
    rows = [" ".join(re.sub(r"<[^>]+>", " ", r).split()) for r in re.findall(r"<tr data-window.*?</tr>", table, re.DOTALL)]
    h = billing.hour0
    assert rows[0] == f"{h + 26 * HOUR:%Y-%m-%d %H:%M} → {h + 27 * HOUR:%H:%M} 4 not reported yet"
    assert rows[1].startswith(f"{h + 2 * HOUR:%Y-%m-%d %H:%M} → {h + 3 * HOUR:%H:%M} 12.5 report #1 sent ")
    assert rows[2].startswith(f"{h + HOUR:%Y-%m-%d %H:%M} → {h + 2 * HOUR:%H:%M} 30 report #1 sent ")
    assert len(rows) == 3 and "3 windows with usage" in table


def test_the_current_chart_spans_the_days_begun_and_names_its_unit(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 30)
    html = customer_page(admin_client).content.decode()

    svg = re.search(r'<svg id="usage-chart-\d+" class="epsilon-usage-chart".*?</svg>', html, re.DOTALL).group(0)
    bars, slots = (int(re.search(rf'data-{name}="(\d+)"', svg).group(1)) for name in ("bars", "slots"))
    assert 10 <= bars == slots <= 11  # subscribed ten days ago: not the month's 30 or 31 slots
    assert '<text class="unit-label"' in svg and "units (billed seconds)" in svg
    # The bars fill the plot's width: the last one ends near the axis' right end.
    xs = [float(x) + float(w) for x, w in re.findall(r'<rect class="usage-bar" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)]
    assert max(xs) > 0.9 * 628


def test_the_overview_draws_with_the_same_renderer(admin_client, billing, source):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 3)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    html = admin_client.get(reverse("admin:billing_overview")).content.decode()
    svg = re.search(r'<svg id="hours" class="epsilon-hours".*?</svg>', html, re.DOTALL).group(0)
    assert 'data-slots="48"' in svg and "reports</text>" in svg
    assert re.search(r'<rect class="hour-bar bar-sent" [^>]*data-status="sent" data-count="1">', svg)


def test_stacked_columns_scale_to_a_round_top():
    g = bar_chart(
        columns=[[Segment(3, "a", "a"), Segment(1, "b", "b")], [Segment(2, "a", "a")]],
        slots=4, x_labels=["1", "2", "3", "4"], unit="reports",
    )
    first, second, third = g["bars"]
    assert g["top"] == nice_ceiling(4) == 5 and g["slots"] == 4
    assert first["height"] == pytest.approx(3 / 5 * 138) and second["y"] == pytest.approx(first["y"] - 1 / 5 * 138)
    assert third["x"] > first["x"] and [label["text"] for label in g["y_labels"]] == ["0", "2.5", "5"]
