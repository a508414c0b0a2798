"""Template tags of the billing admin: usage charts (drawn by admin.charts), badges, money, numbers."""

from datetime import timedelta
from itertools import count

from django import template

from ..admin import display as admin_display
from ..admin.charts import Segment, bar_chart

register = template.Library()

_chart_ids = count(1)


@register.simple_tag
def status_badge(status, label=None, title=""):
    return admin_display.status_badge(status, label, title)


@register.simple_tag
def money(cents, currency):
    return admin_display.money(cents, currency)


@register.simple_tag
def stripe_link(stripe_id, livemode=None, label=None):
    return admin_display.stripe_link(stripe_id, livemode, label)


@register.simple_tag
def unit_help():
    return admin_display.UNIT_HELP


@register.filter
def units(value):
    """A usage figure without trailing zeros, with thousands separators: 1128.000000 -> 1,128."""
    return admin_display.number(value)


@register.filter
def signed(value):
    """A difference with its sign: +25, -3."""
    return admin_display.signed(value)


@register.filter
def unit_count(value):
    """A quantity named: "1,128 units", "1 unit"."""
    return admin_display.units(value)


@register.inclusion_tag("admin/billing/includes/usage_chart.html")
def usage_chart(chart):
    """
    Bars per bucket of a period. A finished period spans all its buckets; the current
    one only those begun, so its first days are not squeezed into a corner.
    """
    complete = bool(chart.bars) and chart.bars[-1].end >= chart.period.end
    columns = [
        [Segment(bar.value, "usage-bar", f"{_when(bar.start, chart.bucket)} – {_when(bar.end, chart.bucket)} UTC: "
                 f"{admin_display.units(bar.value)}", {"value": admin_display.number(bar.value)})]
        for bar in chart.bars
    ]
    slots = chart.slots if complete else max(1, len(chart.bars))
    bucket = _bucket_name(chart.bucket)
    return {
        "chart": chart,
        "id": f"usage-chart-{next(_chart_ids)}",
        "bucket": bucket,
        "complete": complete,
        "bars_count": len(chart.bars),
        "title": f"{chart.title}: usage per {bucket}",
        "desc": f"{len(chart.bars)} {bucket}s from {chart.period.start:%Y-%m-%d %H:%M} UTC, {admin_display.units(chart.total)} in all.",
        "g": bar_chart(
            columns=columns, slots=slots, unit="units (billed seconds)", number=admin_display.number,
            x_labels=[_when(chart.period.start + i * chart.bucket, chart.bucket, short=True) for i in range(slots)],
        ),
    }


def _bucket_name(bucket: timedelta) -> str:
    names = {timedelta(minutes=1): "minute", timedelta(hours=1): "hour", timedelta(days=1): "day", timedelta(days=7): "week"}
    return names.get(bucket, f"{int(bucket.total_seconds() // 60)} minutes")


def _when(moment, bucket: timedelta, short=False) -> str:
    if bucket >= timedelta(days=1):
        return moment.strftime("%b %d" if short else "%Y-%m-%d %H:%M")
    return moment.strftime("%d %H:%M" if short else "%Y-%m-%d %H:%M")
